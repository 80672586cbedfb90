"""Histogram buckets, in seconds, in one place (as vLLM's metrics/buckets.py).

Tiny CPU models decode a token in ~0.1-1 ms and a 12-layer one in a few ms, so the token buckets start at 50 µs;
the tails are trimmed for CPU-sized models, since every bucket x label set is a series of its own."""

# Time to first token: queueing + prefill + one sample.
TTFT_SECONDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]

# Time between two tokens of one request (a decode step of the whole batch).
INTER_TOKEN_SECONDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01,
                       0.025, 0.05, 0.1, 0.25, 0.5, 1.0]

# Whole requests: completions end to end, time waiting for a batch slot, and every HTTP request.
REQUEST_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
                   120.0]
QUEUE_SECONDS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0]

# One engine call: a prefill of the requests joining the batch, or a decode step of every row (0.1 ms at 1 layer,
# batch 1, up to ~100 ms for a long prefill of a deep model).
STEP_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]

# Prompt tokens prefilled together when requests join the batch (--max-prompt-tokens caps one prompt).
PREFILL_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384]

# Rows per decode step (continuous batching; --max-batch-size caps it, 8 by default).
BATCH_ROWS = [1, 2, 4, 8, 16, 32, 64]

# Loading a model: the onnxruntime session, the warm-up generation and the KV cache (~0.1 s for a tiny model on a
# CPU, tens of seconds for a large file on a busy machine or a first CUDA session).
LOAD_SECONDS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]

# OpenTelemetry's GenAI semantic conventions (gen_ai.server.*; gptzoo.server.genai): their boundaries, with more
# below where gptzoo is faster than the servers they were written for. A tiny model answers a short request in a
# few ms, gets its first token in well under 1 ms and decodes a token in 0.1-5 ms, all of which the conventions'
# first bucket would lump together. Every boundary of the conventions is kept, so their quantiles stay comparable.
GENAI_REQUEST_SECONDS = [0.001, 0.0025, 0.005,  # ours
                         0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
GENAI_TTFT_SECONDS = [0.0001, 0.00025, 0.0005,  # ours
                      0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
GENAI_TPOT_SECONDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075,  # ours
                      0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
GENAI_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
