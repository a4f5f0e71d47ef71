"""Recommender vertical: implicit-feedback top-K recommendation, similar items and batch top-K
lists on the shared core (EASE, item-kNN, BPR-MF, LightGCN, popularity; exact or faiss
retrieval)."""
