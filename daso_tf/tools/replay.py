"""Replay a recorded reference training trajectory step by step with daso_tf's DASO.

    python -m daso_tf.tools.replay --trajectory public_trajectory_01.npz --output replay.npz

The trajectory file (an ``.npz`` recorded with the reference code) holds a run of the authors' PyTorch
FixMatch+DASO in float64: its hyper-parameters, the initial weights in the reference's
state-dict naming (``w/*``), and the exact (already augmented) batches of every step.
This tool reads only those INPUTS, never the recorded results: it builds
``daso_tf.DASO`` on a ``WideResNet(depth, width)`` with the same hyper-parameters, loads
the weights into the online and the EMA network, runs every step through the model's
own training step under a float64 Keras policy, and writes what the reference recorded:

- ``loss_x, loss_u, loss_align`` [steps];
- ``pseudo_labels, linear_pseudo_labels, mask`` [steps, B_u];
- after the last step: ``online_logits_inference, ema_logits_inference`` [N, K] on the
  probe images (inference-mode BatchNorm), ``prototypes`` [K, D], ``histogram_counts`` [K].

Float64 matters: the run is chaotic (a 1e-9 weight perturbation flips pseudo-labels
within 30 steps), so only a float64 replay can agree step for step.
"""

import argparse
import contextlib
import pathlib
import sys
import time

import numpy as np

CONFIG_KEYS = (
    "num_classes", "depth", "width", "labeled_batch_size", "unlabeled_batch_size", "steps",
    "warmup_steps", "histogram_period", "queue_size", "dist_temperature", "proto_temperature",
    "threshold", "learning_rate", "momentum", "nesterov", "weight_decay", "ema_decay",
    "normalize_mean", "normalize_std",
)
BATCH_KEYS = ("x_labeled", "y_labeled", "u_weak", "u_strong")
WEIGHT_PREFIX = "w/"
OUTPUT_KEYS = (
    "loss_x", "loss_u", "loss_align", "pseudo_labels", "linear_pseudo_labels", "mask",
    "online_logits_inference", "ema_logits_inference", "prototypes", "histogram_counts",
)


def read_trajectory_inputs(path):
    """The inputs of a recorded trajectory: config, initial weights, batches, probe images.

    Returns a dict with the ``CONFIG_KEYS`` (Python scalars / float64 arrays),
    ``state_dict`` (reference names without the ``w/`` prefix), the ``BATCH_KEYS`` arrays
    and ``probe_images``. The recorded results in the file are not read.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--trajectory {str(path)!r}: no such file.")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"--trajectory {str(path)!r} is not a NumPy .npz file: {error}") from error
    with data:
        needed = CONFIG_KEYS + BATCH_KEYS + ("probe_images",)
        missing = [key for key in needed if key not in data.files]
        if missing:
            raise ValueError(f"Trajectory {str(path)!r} lacks the key(s) {', '.join(missing)}.")
        inputs = {}
        for key in CONFIG_KEYS:
            value = data[key]
            inputs[key] = value.astype(np.float64) if value.ndim else value.item()
        inputs["state_dict"] = {
            key[len(WEIGHT_PREFIX):]: data[key] for key in data.files if key.startswith(WEIGHT_PREFIX)
        }
        for key in BATCH_KEYS + ("probe_images",):
            inputs[key] = data[key]
    if not inputs["state_dict"]:
        raise ValueError(f"Trajectory {str(path)!r} holds no initial weights ('{WEIGHT_PREFIX}*' keys).")

    steps = int(inputs["steps"])
    batch, unlabeled = int(inputs["labeled_batch_size"]), int(inputs["unlabeled_batch_size"])
    expected_shapes = {
        "x_labeled": (steps, batch), "y_labeled": (steps, batch),
        "u_weak": (steps, unlabeled), "u_strong": (steps, unlabeled),
    }
    for key, leading in expected_shapes.items():
        if inputs[key].shape[:2] != leading:
            raise ValueError(
                f"Trajectory {str(path)!r}: {key} has shape {inputs[key].shape}; expected it to start "
                f"with (steps, batch) = {leading}."
            )
    for key in ("x_labeled", "u_weak", "u_strong", "probe_images"):
        if inputs[key].dtype != np.uint8 or inputs[key].shape[-1] != 3:
            raise ValueError(
                f"Trajectory {str(path)!r}: {key} must be uint8 RGB images; got {inputs[key].dtype} "
                f"{inputs[key].shape}."
            )
    return inputs


@contextlib.contextmanager
def float64_policy():
    """Runs the body under Keras' float64 dtype policy and floatx; restores both after."""
    import keras

    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def build_replay_model(inputs):
    """``daso_tf.DASO`` with the trajectory's hyper-parameters and initial weights, compiled
    with the reference SGD. Call under ``float64_policy()``."""
    import daso_tf
    from daso_tf.models import WideResNet
    from daso_tf.models.reference_weights import load_reference_weights

    image_shape = tuple(inputs["x_labeled"].shape[2:])
    backbone = WideResNet(depth=int(inputs["depth"]), width=int(inputs["width"]), input_shape=image_shape)
    model = daso_tf.DASO(
        backbone,
        int(inputs["num_classes"]),
        normalization=(tuple(inputs["normalize_mean"]), tuple(inputs["normalize_std"])),
        warmup_steps=int(inputs["warmup_steps"]),
        queue_size=int(inputs["queue_size"]),
        histogram_period=int(inputs["histogram_period"]),
        dist_temperature=float(inputs["dist_temperature"]),
        proto_temperature=float(inputs["proto_temperature"]),
        threshold=float(inputs["threshold"]),
        ema_decay=float(inputs["ema_decay"]),
        # The reference never closes the histogram window at its last step (t + 1 < max_iter).
        total_steps=int(inputs["steps"]),
    )
    model.compile(
        optimizer=daso_tf.CoupledL2SGD(
            learning_rate=float(inputs["learning_rate"]),
            momentum=float(inputs["momentum"]),
            nesterov=bool(inputs["nesterov"]),
            l2=float(inputs["weight_decay"]),
        )
    )
    model.build((None,) + image_shape)
    dtypes = {str(v.dtype) for v in model.online_network.weights}
    if dtypes != {"float64"}:
        raise RuntimeError(f"The replay model must be float64 throughout; its weights are {sorted(dtypes)}.")
    # The reference's EMA network starts as an exact copy of the online one.
    load_reference_weights(model, inputs["state_dict"], network="both")
    model.optimizer.build(model.trainable_variables)
    return model


def replay(inputs, steps=None, log=None):
    """Runs the trajectory's steps through ``model.train_step_with_outputs`` (the body of
    the model's ``train_step``) and returns the ``OUTPUT_KEYS`` as numpy arrays.

    Args:
        inputs: from ``read_trajectory_inputs``.
        steps: replay only the first ``steps`` steps (default: all).
        log: optional callable receiving one progress line per step.
    """
    import tensorflow as tf
    from keras import ops

    total = int(inputs["steps"])
    steps = total if steps is None else int(steps)
    if not 1 <= steps <= total:
        raise ValueError(f"--steps must be in [1, {total}] for this trajectory; got {steps}.")

    with float64_policy():
        model = build_replay_model(inputs)

        @tf.function(reduce_retracing=True)
        def train_step(x_l, y_l, u_w, u_s):
            logs, outputs = model.train_step_with_outputs(((x_l, y_l), (u_w, u_s)))
            wanted = ("pseudo_labels", "linear_pseudo_labels", "mask")
            return logs, {key: outputs[key] for key in wanted}

        records = {key: [] for key in ("loss_x", "loss_u", "loss_align", "pseudo_labels",
                                       "linear_pseudo_labels", "mask")}
        for t in range(steps):
            start = time.perf_counter()
            logs, outputs = train_step(
                tf.constant(inputs["x_labeled"][t]), tf.constant(inputs["y_labeled"][t]),
                tf.constant(inputs["u_weak"][t]), tf.constant(inputs["u_strong"][t]),
            )
            for key in ("loss_x", "loss_u", "loss_align"):
                records[key].append(np.float64(ops.convert_to_numpy(logs[key])))
            records["pseudo_labels"].append(ops.convert_to_numpy(outputs["pseudo_labels"]).astype(np.int64))
            records["linear_pseudo_labels"].append(
                ops.convert_to_numpy(outputs["linear_pseudo_labels"]).astype(np.int64))
            records["mask"].append(ops.convert_to_numpy(outputs["mask"]).astype(bool))
            if log is not None:
                log(f"step {t}: loss_x={records['loss_x'][-1]:.10g} loss_u={records['loss_u'][-1]:.10g} "
                    f"loss_align={records['loss_align'][-1]:.10g} mask={int(records['mask'][-1].sum())} "
                    f"({time.perf_counter() - start:.2f}s)")

        probe = tf.constant(inputs["probe_images"])
        results = {key: np.stack(values) for key, values in records.items()}
        results["online_logits_inference"] = ops.convert_to_numpy(model.online_network(probe, training=False))
        results["ema_logits_inference"] = ops.convert_to_numpy(model.ema_network(probe, training=False))
        results["prototypes"] = ops.convert_to_numpy(model.queue.prototypes).astype(np.float64)
        results["histogram_counts"] = ops.convert_to_numpy(model.histogram.counts).astype(np.int64)
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m daso_tf.tools.replay",
        description="Replay a recorded reference DASO trajectory (float64) and write what daso_tf computes.",
    )
    parser.add_argument("--trajectory", required=True, help="a recorded reference trajectory (*_trajectory_*.npz)")
    parser.add_argument("--output", required=True, help="where to write the replay's results (.npz)")
    parser.add_argument("--steps", type=int, default=None, help="replay only the first N steps (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress lines")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output = pathlib.Path(args.output)
    if output.suffix != ".npz":
        raise SystemExit(f"--output {args.output!r}: expected a path ending in .npz.")
    if not output.parent.exists():
        raise SystemExit(f"--output {args.output!r}: directory {str(output.parent)!r} does not exist.")
    try:
        inputs = read_trajectory_inputs(args.trajectory)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"replay: {error}") from error
    if args.steps is not None and not 1 <= args.steps <= int(inputs["steps"]):
        total = int(inputs["steps"])
        raise SystemExit(f"replay: --steps must be in [1, {total}] for this trajectory; got {args.steps}.")
    results = replay(inputs, steps=args.steps, log=None if args.quiet else print)
    np.savez(output, **results)
    if not args.quiet:
        print(f"wrote {output} ({', '.join(sorted(results))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
