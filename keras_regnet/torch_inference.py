"""Batch norms folded into their convolutions while a built model infers on PyTorch.

TensorFlow folds a conv's batch norm into it at inference and fuses the ReLU; PyTorch's eager
layers each make a pass of their own over the activations. In a RegNetX004 forward pass on a
2-core AMD EPYC (batch 32, 224x224) PyTorch's profiler gave its batch norms 9% of the time, one
read and one write of every conv output. Here a conv that a batch norm alone reads convolves
with the folded kernel and bias instead (``scale = gamma / sqrt(var + eps)``, kernel x scale,
``beta - mean x scale``), and that batch norm passes its input through.

Only where that is exact: :func:`pair_convolutions_with_batch_norms` marks the pairs
:mod:`keras_regnet.folding` would fold (the BN the conv's only reader, neither layer shared), for
one model, the one our builders return. A pair folds only while that model itself is the layer
being called (Keras's call context), in inference, outside autograd and ``torch.compile``; a
model built on an inner layer's output, a conv called alone, training and every other backend
compute as before. The conv marks the tensor it returns, and the batch norm passes through only
a tensor marked for it. The folded kernel is kept until a variable changes.
"""

from __future__ import annotations

import weakref

import keras

# conv -> (its model, its batch norm: weak references; the folded kernel's cache). Kept out of the
# layers' attributes: Keras's saving walks those and would save the batch norm under the conv.
_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MARK = "_keras_regnet_folded_into"  # on a conv's output tensor: the batch norm it folded


def pair_convolutions_with_batch_norms(model: keras.Model) -> int:
    """Marks ``model``'s foldable conv -> batch-norm pairs for PyTorch inference; their number.

    Example:
        >>> model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3))
        >>> pair_convolutions_with_batch_norms(model) > 0
        True
    """
    from keras_regnet import folding

    plan = folding.plan_of(model)
    paired = 0
    for conv_name, bn_name in plan.convs.items():
        conv, bn = model.get_layer(conv_name), model.get_layer(bn_name)
        # Our FusedBatchNorm (it alone passes a folded tensor through); a conv of our layers
        # consults the table, Keras's own never does.
        if hasattr(bn, "_torch_fusable") and not conv.use_bias:
            _PAIRS[conv] = (weakref.ref(model), weakref.ref(bn), {})
            paired += 1
    return paired


def folded_kernel_and_bias(conv: keras.layers.Conv2D, kernel, inputs):
    """(kernel, bias, batch norm) to convolve with instead of ``kernel`` now, or None."""
    pair = _PAIRS.get(conv)
    if pair is None:
        return None
    import torch

    owner, bn, cache = pair[0](), pair[1](), pair[2]
    if torch.is_grad_enabled() or torch.compiler.is_compiling() or owner is None or bn is None:
        return None
    context = _call_context()
    if context is None or context.entry_layer is not owner or context.get_value("training"):
        return None
    if not bn._torch_fusable(inputs, False, None):
        return None
    sources = [keras.ops.convert_to_tensor(v) for v in
               (kernel, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)]
    key = [(id(t), t._version) for t in sources]
    if cache.get("key") != key:  # refolded only after a variable changed
        from keras_regnet.folding import fold_into_conv

        folded = fold_into_conv([keras.ops.convert_to_numpy(kernel)], bn)
        device = sources[0].device
        cache.update(key=key, sources=sources, kernel=torch.as_tensor(folded[0], device=device),
                     bias=torch.as_tensor(folded[1], device=device))
    return cache["kernel"], cache["bias"], bn


def mark_folded(outputs, bn) -> None:
    """Tells ``bn`` that ``outputs`` already holds its normalisation."""
    setattr(outputs, _MARK, bn)


def folded_for(inputs, bn) -> bool:
    """Whether ``inputs`` came from the conv that folded ``bn`` in."""
    return getattr(inputs, _MARK, None) is bn


def _call_context():
    """Keras's current call context (its entry layer: the outermost layer being called), or None
    where this Keras has none: then nothing folds."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    context = global_state.get_global_attribute("current_call_ctx")
    return context if hasattr(context, "entry_layer") and hasattr(context, "get_value") else None
