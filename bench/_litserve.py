"""LitServe with its batching on, serving the same model, body and decoding as the others.
Run by bench/serving.py as `python -m bench._litserve --model mlp --port P ...`."""

from __future__ import annotations

import argparse

import litserve as ls

from bench._models import PATHS, REQUESTS, build_model, decode, forward, set_threads, to_batch


class BenchAPI(ls.LitAPI):
    """Module level: LitServe pickles the API into its inference worker process."""

    def __init__(self, model: str, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def setup(self, device):
        set_threads()
        self.net = build_model(self.model)

    def decode_request(self, request):
        return decode(self.model, REQUESTS[self.model].model_validate(request))

    def batch(self, inputs):
        return to_batch(inputs)

    def predict(self, x):
        return forward(self.net, x)

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--batch-timeout", type=float, default=0.005)
    ap.add_argument("--fast-queue", action="store_true")
    a = ap.parse_args()
    api = BenchAPI(a.model, max_batch_size=a.max_batch_size, batch_timeout=a.batch_timeout,
                   api_path=PATHS[a.model])
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=a.fast_queue)
    # the same uvicorn settings as the other servers
    server.run(host="127.0.0.1", port=a.port, num_api_servers=1, log_level="warning",
               generate_client_file=False, http="httptools", loop="uvloop", access_log=False)


if __name__ == "__main__":
    main()
