"""MirroredStrategy on 2 logical CPUs trains exactly like one device on the global batch.

Runs in a subprocess: logical devices must be configured before TensorFlow initialises.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from tests.conftest import REPO_ROOT

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tests.helpers import as_dataset, synthetic_batches, tiny_daso

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = tiny_daso(sync_bn=True, warmup_steps=1, histogram_period=2)
            model.compile()
        batches = synthetic_batches(4, labeled=8, unlabeled=16, seed=5)
        losses = []
        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                losses.append({k: float(v) for k, v in logs.items()})
        model.fit(as_dataset(batches), epochs=1, verbose=0, callbacks=[Record()])
        return {
            "losses": losses,
            "prototypes": model.queue.prototypes.numpy().tolist(),
            "histogram": model.histogram.counts.numpy().tolist(),
            "step": int(model.step.numpy()),
            "weights": [w.numpy().tolist() for w in model.online_network.weights[:3]],
            "ema": [w.numpy().tolist() for w in model.ema_network.weights[-2:]],
        }

    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT" + json.dumps({"one": one, "two": two}))
""")


def test_mirrored_two_replicas_match_one_device():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT")][-1]
    result = json.loads(line[len("RESULT"):])
    one, two = result["one"], result["two"]
    assert one["step"] == two["step"] == 4
    assert len(one["losses"]) == len(two["losses"]) == 4
    for a, b in zip(one["losses"], two["losses"]):
        for key in ("loss", "loss_x", "loss_u", "loss_align", "mask"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-5, err_msg=key)
    assert one["losses"][-1]["loss_align"] > 0  # DASO was active
    np.testing.assert_allclose(two["prototypes"], one["prototypes"], rtol=1e-5, atol=1e-5)
    assert two["histogram"] == one["histogram"] and sum(one["histogram"]) == 2 * 16
    for a, b in zip(one["weights"] + one["ema"], two["weights"] + two["ema"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-5)


LEARNER_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tests.helpers import as_dataset, synthetic_batches, tiny_daso

    STATE = {"debiaspl": ("qhat",), "acr": ("tau1_current", "unlabeled_distribution", "distance_sums")}
    KWARGS = {"debiaspl": dict(threshold=0.5, qhat_momentum=0.5),
              "acr": dict(threshold=0.6, distribution_momentum=0.5, adaptation_period=2, estimation_start_step=0)}

    def train(name, strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = tiny_daso(algorithm=name, sync_bn=True, **KWARGS[name])
            model.compile()
        batches = synthetic_batches(4, labeled=8, unlabeled=16, seed=5)
        losses = []
        class Record(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                losses.append({k: float(v) for k, v in logs.items()})
        model.fit(as_dataset(batches), epochs=1, verbose=0, callbacks=[Record()])
        return {"losses": losses, "state": {s: getattr(model, s).numpy().tolist() for s in STATE[name]},
                "weights": [w.numpy().tolist() for w in model.online_network.weights[:3]]}

    # One strategy object of each kind for both learners: a second MirroredStrategy in the
    # process would reuse the first one's collective instance keys.
    one, two = tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {name: {"one": train(name, one), "two": train(name, two)} for name in ("debiaspl", "acr")}
    print("RESULT" + json.dumps(result))
""")


def test_debiaspl_and_acr_state_on_two_replicas_matches_one_device():
    """q_hat (DebiasPL) and u_hat, D, tau1 (ACR) are updated from all-gathered predictions."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", LEARNER_SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("RESULT")][-1]
    result = json.loads(line[len("RESULT"):])
    for name, runs in result.items():
        one, two = runs["one"], runs["two"]
        assert len(one["losses"]) == len(two["losses"]) == 4
        for a, b in zip(one["losses"], two["losses"]):
            assert set(a) == set(b)
            for key in a:  # float32 sums in another order: ~3e-5 apart after 4 steps
                np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")
        for key, value in one["state"].items():
            np.testing.assert_allclose(two["state"][key], value, rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}")
        for a, b in zip(one["weights"], two["weights"]):
            np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-5)
    assert np.ptp(result["debiaspl"]["one"]["state"]["qhat"]) > 1e-3  # q_hat moved off uniform
    acr = result["acr"]["one"]["state"]
    assert acr["tau1_current"] != 2.0 and np.ptp(acr["unlabeled_distribution"]) > 1e-3
