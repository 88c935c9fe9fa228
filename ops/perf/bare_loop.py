"""A bare pinned TensorFlow session loop: the baseline the worker's figures are compared with.

    python ops/perf/bare_loop.py MODEL.pb --cpu 0 --batch-size 1 --duration-s 5

Pins itself to one CPU, loads the frozen graph with plain TensorFlow (one intra-op thread, one
inter-op thread), warms up, prints ``ready``, waits for a line on stdin (a start barrier shared
with other loops), then runs for ``--duration-s`` and prints one JSON line with its throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    os.environ.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    with open(args.model, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    ops = graph.get_operations()
    consumed = {tensor.op.name for op in ops for tensor in op.inputs}
    feed = next(op for op in ops if op.type == "Placeholder").outputs[0]
    fetch = next(op for op in ops if op.name not in consumed and op.type not in ("NoOp", "Const"))
    shape = [args.batch_size, *feed.shape.as_list()[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=1, inter_op_parallelism_threads=1
    )
    session = tf.compat.v1.Session(graph=graph, config=config)
    run = session.make_callable(fetch.outputs[0], feed_list=[feed])
    for _ in range(args.warmup):
        run(x)
    print("ready", flush=True)
    sys.stdin.readline()
    calls = 0
    start = time.monotonic()
    deadline = start + args.duration_s
    while True:
        run(x)
        calls += 1
        now = time.monotonic()
        if now >= deadline:
            break
    print(
        json.dumps(
            {"cpu": args.cpu, "throughput_samples_per_s": calls * args.batch_size / (now - start)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
