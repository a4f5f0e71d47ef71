"""NLP verticals on Hugging Face `transformers` + `tokenizers`.

- `nlp-sentiment` (nlp.sentiment_vertical): fine-tunes a pretrained encoder
  (all-MiniLM-L6-v2 by default) for binary or multi-class sentiment, with calibrated
  probabilities;
- `nlp-translation` (nlp.translation_vertical): a Marian sequence-to-sequence model, either
  loaded from a checkpoint (e.g. opus-mt) or trained from scratch with a `tokenizers` BPE.
"""
