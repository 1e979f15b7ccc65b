"""Profiles kept true, the fields the probes cannot see: each library's own defaults (eps, momentum,
the initial running statistics), read from the installed library constructed with no arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from normspec.spec.conventions import get_convention
from normspec.targets.audit import venv_root

# profile -> (venv or None, environment, Python that sets `out` to the library's defaults)
_TORCH_BN = "m = torch.nn.BatchNorm1d(3); out = dict(eps=m.eps, momentum=m.momentum, rm=float(m.running_mean[0]), rv=float(m.running_var[0]))"
_ONNX = (
    "s = onnx.defs.get_schema({op!r}, {version}); a = s.attributes; out = dict(eps=a['epsilon'].default_value.f{mom})"
)
_ONNX_MOM = ", momentum=a['momentum'].default_value.f"
LIBRARY = {
    "torch": (None, {}, "import torch; " + _TORCH_BN),
    "torch_layer_norm": (None, {}, "import torch; out = dict(eps=torch.nn.LayerNorm(3).eps)"),
    "torch_group_norm": (None, {}, "import torch; out = dict(eps=torch.nn.GroupNorm(1, 3).eps)"),
    "torch_rms_norm": (None, {}, "import torch; out = dict(eps=torch.nn.RMSNorm(3).eps)"),
    "torch_instance_norm": (
        None,
        {},
        "import torch; m = torch.nn.InstanceNorm1d(3); out = dict(eps=m.eps, momentum=m.momentum)",
    ),
    "keras3": (
        None,
        {"KERAS_BACKEND": "numpy"},
        "import keras; m = keras.layers.BatchNormalization(); m.build((2, 3)); "
        "out = dict(eps=m.epsilon, momentum=m.momentum, rm=float(m.moving_mean.numpy()[0]), "
        "rv=float(m.moving_variance.numpy()[0]))",
    ),
    "keras3_layer_norm": (
        None,
        {"KERAS_BACKEND": "numpy"},
        "import keras; out = dict(eps=keras.layers.LayerNormalization().epsilon)",
    ),
    "keras3_group_norm": (
        None,
        {"KERAS_BACKEND": "numpy"},
        "import keras; out = dict(eps=keras.layers.GroupNormalization(groups=1).epsilon)",
    ),
    "flax_linen": (
        None,
        {"JAX_PLATFORMS": "cpu"},
        "from flax import linen as nn; m = nn.BatchNorm(); out = dict(eps=m.epsilon, momentum=m.momentum)",
    ),
    "flax_layer_norm": (
        None,
        {"JAX_PLATFORMS": "cpu"},
        "from flax import linen as nn; out = dict(eps=nn.LayerNorm().epsilon)",
    ),
    "flax_group_norm": (
        None,
        {"JAX_PLATFORMS": "cpu"},
        "from flax import linen as nn; out = dict(eps=nn.GroupNorm().epsilon)",
    ),
    "flax_rms_norm": (
        None,
        {"JAX_PLATFORMS": "cpu"},
        "from flax import linen as nn; out = dict(eps=nn.RMSNorm().epsilon)",
    ),
    "onnx_bn15": (None, {}, "import onnx; " + _ONNX.format(op="BatchNormalization", version=15, mom=_ONNX_MOM)),
    "onnx_bn9": (None, {}, "import onnx; " + _ONNX.format(op="BatchNormalization", version=9, mom=_ONNX_MOM)),
    "onnx_layer_norm17": (None, {}, "import onnx; " + _ONNX.format(op="LayerNormalization", version=17, mom="")),
    "onnx_group_norm21": (None, {}, "import onnx; " + _ONNX.format(op="GroupNormalization", version=21, mom="")),
    "onnx_instance_norm": (None, {}, "import onnx; " + _ONNX.format(op="InstanceNormalization", version=6, mom="")),
    "onnx_rms_norm23": (None, {}, "import onnx; " + _ONNX.format(op="RMSNormalization", version=23, mom="")),
    "tf_keras2_nonfused": (
        "tf",
        {},
        "import tf_keras; m = tf_keras.layers.BatchNormalization(); out = dict(eps=m.epsilon, momentum=m.momentum)",
    ),
    "tf_keras2_layer_norm": ("tf", {}, "import tf_keras; out = dict(eps=tf_keras.layers.LayerNormalization().epsilon)"),
    "paddle_cpu": (
        "paddle",
        {},
        "import paddle; m = paddle.nn.BatchNorm1D(3); out = dict(eps=m._epsilon, momentum=m._momentum, "
        "rm=float(m._mean.numpy()[0]), rv=float(m._variance.numpy()[0]))",
    ),
    "mxnet_cpu": (
        "mxnet",
        {},
        "from mxnet import gluon; m = gluon.nn.BatchNorm(); out = dict(eps=m._kwargs['eps'], momentum=m._kwargs['momentum'])",
    ),
}


@pytest.mark.parametrize("profile", sorted(LIBRARY))
def test_profile_defaults_match_the_installed_library(profile):
    venv, env, code = LIBRARY[profile]
    python = sys.executable
    if venv is not None:
        python = str(venv_root() / venv / "bin" / "python")
        if not os.path.exists(python):
            pytest.skip(
                f"the {venv} target's virtual environment is missing: bash scripts/setup-target-venvs.sh {venv}"
            )
    module = code.split(";")[0].split()[-1].split(".")[0]
    script = f"{code}\nimport json; print(json.dumps(out))"
    run = subprocess.run([python, "-c", script], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    if run.returncode != 0 and "No module named" in run.stderr:
        pytest.skip(f"{module} is not installed (pip install 'normspec[audit]')")
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    conv = get_convention(profile)

    def f32(v):  # libraries store these as float32 (ONNX attributes) or double: compared at float32
        return None if v is None else float(np.float32(v))

    assert f32(seen["eps"]) == f32(conv.eps_default), (seen, conv.eps_default)
    if "momentum" in seen:
        assert f32(seen["momentum"]) == f32(conv.momentum_default), (seen, conv.momentum_default)
    if "rm" in seen:
        assert (seen["rm"], seen["rv"]) == (conv.running_mean_init, conv.running_var_init), seen
