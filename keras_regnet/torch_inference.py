"""Batch norm, ReLU and zero padding fused into their convolutions while a model infers on PyTorch.

TensorFlow's graph optimiser folds a conv's batch norm into it at inference, fuses the ReLU and
takes the padding into the conv; PyTorch's eager layers each make a pass of their own over the
activations. In a RegNetX004 forward pass on a 2-core AMD EPYC (batch 32, 224x224) PyTorch's
profiler gave the batch norms 9% of the time; with them folded, the ReLUs 12% and the zero
padding (fill + copy) 5%. Here, around a conv of ours:

- the ``ZeroPadding2D`` (symmetric) that alone feeds it hands its input on unpadded, marked, and
  the conv pads inside its kernel instead;
- the batch norm that alone reads it is folded in: the conv convolves with ``kernel x scale``
  plus ``beta - mean x scale`` (``scale = gamma / sqrt(var + eps)``), and the batch norm passes
  its input through;
- the ReLU that alone reads that batch norm is a oneDNN post-op of the same convolution
  (``mkldnn::_convolution_pointwise``, PyTorch's fused CPU kernel), and passes its input through;
- a residual ``Add`` that a ReLU alone reads adds and rectifies in one pass (``aten::_add_relu``),
  and that ReLU passes its input through.

Only where that is exact: :func:`mark_fusions` marks the patterns
:mod:`keras_regnet.folding` would fold (each layer the next one's only reader, none shared), for
one model: the one our builders return, or one no builder returned (loaded from a file,
KerasHub's classes) on its first call (:func:`adopt_models_being_called`). They fuse only while
that model's own graph runs: the model itself being called (Keras's call context), or its direct walk
(:mod:`keras_regnet.torch_graph`) running as a layer of another model; in inference, outside
autograd and ``torch.compile``. A model built on an inner layer's output, a layer called alone,
training and every other backend compute as before. A fused tensor carries the layers it
already did the work of, and a layer passes through only a tensor that names it. The folded
kernel is kept until a variable changes.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, NamedTuple

import keras

from keras_regnet import conv_ops, torch_graph

_MARK = "_keras_regnet_fused_into"  # on a tensor: the layers whose work it already holds


@dataclasses.dataclass
class _Fusion:
    """What one conv of ours does for its neighbours (weak references: the model owns them)."""

    model: weakref.ref
    batch_norm: weakref.ref | None = None  # folded into the kernel and bias
    relu: weakref.ref | None = None  # after that batch norm: a post-op of the conv
    padding: weakref.ref | None = None  # before the conv: inside its kernel
    cache: dict = dataclasses.field(default_factory=dict)  # the folded kernel, while unchanged


# Keyed by layer, kept out of the layers' attributes: Keras's saving walks those and would save
# the batch norm under the conv.
_FUSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # conv -> _Fusion
_PADDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # padding -> its conv's _Fusion
_ADDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # add -> (model, the ReLU after it)


def mark_fusions(model: keras.Model) -> int:
    """Marks what ``model``'s layers may fuse while it infers on PyTorch; the number of batch
    norms it folds.

    Example:
        >>> model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3))
        >>> mark_fusions(model) > 0
        True
    """
    from keras_regnet import folding

    graph = folding.graph_of(model)
    layers = {layer.name: layer for layer in model.layers}
    for name, add in layers.items():
        relu = layers.get(graph.only_reader(name) or "")
        if (getattr(add, "fusible_with_relu", False) and graph.calls[name] == 1
                and len(graph.sources[name]) == 2 and _plain_relu(relu)):
            _ADDS[add] = (weakref.ref(model), weakref.ref(relu))
    folded = 0
    for conv_name, bn_name in folding.plan_of(model, graph).convs.items():
        conv, bn = layers[conv_name], layers[bn_name]
        # Our layers only: a conv of ours consults the table, our batch norm passes a fused
        # tensor through (recognised by what it can do: no import cycle).
        if hasattr(bn, "_torch_fusable") and not conv.use_bias:
            _FUSIONS[conv] = _conv_fusion_of(model, graph, layers, conv, bn)
            folded += 1
    return folded


def _conv_fusion_of(model, graph, layers: dict, conv, bn) -> _Fusion:
    """The batch norm ``conv`` folds, the ReLU that alone reads that batch norm, and the
    symmetric padding that alone feeds ``conv`` (registered in ``_PADDINGS``)."""
    fusion = _Fusion(weakref.ref(model), batch_norm=weakref.ref(bn))
    relu = layers.get(graph.only_reader(bn.name) or "")
    if _plain_relu(relu):
        fusion.relu = weakref.ref(relu)
    sources = graph.sources[conv.name]
    padding = layers.get(sources[0]) if len(sources) == 1 else None
    if (isinstance(padding, keras.layers.ZeroPadding2D) and getattr(padding, "fusible_into_conv", False)
            and graph.only_reader(padding.name) == conv.name
            and conv.padding == "valid" and padding.data_format == conv.data_format):
        fusion.padding = weakref.ref(padding)
        _PADDINGS[padding] = fusion
    return fusion


# Models no builder of ours returned (a model loaded from a .keras file, KerasHub's
# RegNetBackbone, built by its own class) are examined once, when a call reaches one of their
# unmarked convs, and marked as the builders mark theirs: from the next call on they fold and
# walk their layers directly.
_EXAMINED: weakref.WeakSet = weakref.WeakSet()
_ADOPTED: weakref.WeakSet = weakref.WeakSet()  # those of them marked, whose marks a larger graph may take
# The Keras layers our builders use beside our own. A model of only these (and ours) has no mask,
# no layer that needs Keras's per-layer call: what a builder returns, loaded or rebuilt.
_BUILDERS_KERAS_LAYERS = frozenset({keras.layers.InputLayer, keras.layers.Dense, keras.layers.Multiply,
                                    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D})


def adopt_models_being_called() -> None:
    """Marks the models being called (Keras's entry layer and the models nested in it) that hold
    only our builders' layers as a builder marks its model (:func:`mark_fusions`,
    :func:`torch_graph.call_layers_directly`); once per model. One whose layers another model
    marked first walks directly without folding, unless that model was adopted on a part of its
    graph: then it takes those layers over (:func:`_takes_over_fusions`).

    Example:
        >>> adopt_models_being_called()  # outside any call: nothing to do
    """
    import torch

    if torch.compiler.is_compiling():
        return  # nothing to trace for torch.compile: the next eager call marks the model
    context = _call_context()
    entry = context.entry_layer if context is not None else None
    if entry is None or entry in _EXAMINED:
        return
    for model in _models_within(entry):
        if model in _EXAMINED:
            continue
        _EXAMINED.add(model)
        if (not _functional(model) or not holds_only_builders_layers(model)
                or torch_graph.calls_directly(model)):
            continue
        if _takes_over_fusions(model):
            mark_fusions(model)
            _ADOPTED.add(model)
        torch_graph.call_layers_directly(model)
    _EXAMINED.add(entry)


def _takes_over_fusions(model: keras.Model) -> bool:
    """Whether ``model`` may mark its layers' fusions: none is marked, or only by models that are
    gone or were adopted on a part of its graph (a model built on one of its inner outputs and
    called first), whose marks it then drops. The larger graph folds, as when a builder's model
    and a model on its inner outputs share layers; a builder's marks are never taken over."""
    owners = {id(owner): owner for layer in model.layers for owner in _owners(layer) if owner is not None}
    layers = {id(layer) for layer in model.layers}
    if not all(owner in _ADOPTED and {id(x) for x in owner.layers} < layers for owner in owners.values()):
        return False
    for layer in model.layers:
        for table in (_FUSIONS, _PADDINGS, _ADDS):
            table.pop(layer, None)
    return True


def _owners(layer) -> list:
    """The models that marked ``layer``'s fusions (None for one that is gone)."""
    marks = [_FUSIONS.get(layer), _PADDINGS.get(layer)]
    owners = [mark.model() for mark in marks if mark is not None]
    if layer in _ADDS:
        owners.append(_ADDS[layer][0]())
    return owners


def _models_within(layer):
    """``layer`` if it is a model, and every model nested in it."""
    if isinstance(layer, keras.Model):
        yield layer
        for inner in layer.layers:
            yield from _models_within(inner)


def _functional(model: keras.Model) -> bool:
    """Whether ``model`` is a graph of layers (Keras's Functional, or a subclass of it such as
    KerasHub's backbones), not a subclassed model with a ``call`` of its own."""
    return any(cls.__name__ == "Functional" for cls in type(model).__mro__)


def holds_only_builders_layers(model: keras.Model) -> bool:
    """Whether every layer of ``model`` is one of ours or a Keras layer our builders use.

    Example:
        >>> holds_only_builders_layers(keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3)))
        True
    """
    return all(type(layer) in _BUILDERS_KERAS_LAYERS or type(layer).__module__ == "keras_regnet.layers"
               for layer in model.layers)


def _plain_relu(layer) -> bool:
    """One of our ReLUs, without slope, cap or threshold: what a fused kernel's ReLU computes."""
    return isinstance(layer, keras.layers.ReLU) and getattr(layer, "computes_plain_relu", False)


def _fusing_now(model_ref: weakref.ref) -> bool:
    """Whether the model a fusion belongs to is being called, in inference, outside autograd:
    called itself (Keras's call context names it), or walking its own graph
    (:mod:`keras_regnet.torch_graph`) as a layer of another model."""
    import torch

    if torch.is_grad_enabled() or torch.compiler.is_compiling() or model_ref() is None:
        return False
    if torch_graph.walking_in_inference(model_ref()):
        return True
    context = _call_context()
    return context is not None and context.entry_layer is model_ref() and not context.get_value("training")


def deferred_padding(layer: keras.layers.ZeroPadding2D, inputs) -> Any | None:
    """``inputs`` marked for the conv ``layer`` feeds to pad, if it fuses now; else None."""
    fusion = _PADDINGS.get(layer)
    if fusion is None or not _fusing_now(fusion.model):
        return None
    outputs = inputs.view_as(inputs)  # a tensor of its own to mark: the input may have other readers
    mark_fused(outputs, layer)
    return outputs


def add_with_relu(layer: keras.layers.Add, inputs: list) -> Any | None:
    """``relu(a + b)`` in one pass, marked for the ReLU after ``layer``, if it fuses now; else None."""
    pair = _ADDS.get(layer)
    if pair is None or not _fusing_now(pair[0]) or len(inputs) != 2:
        return None
    import torch

    a, b = inputs
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and a.dtype == b.dtype == torch.float32 and a.device.type == b.device.type == "cpu"):
        return None
    # PyTorch's fused CPU kernel (internal: a release without it gets the two passes, in place)
    if conv_ops.torch_has_op("aten", "_add_relu"):
        outputs = torch.ops.aten._add_relu(a, b)
    else:
        outputs = torch.relu_(torch.add(a, b))
    mark_fused(outputs, pair[1]())
    return outputs


class ConvCall(NamedTuple):
    """How a conv convolves now, fused with its neighbours."""

    kernel: Any
    bias: Any  # None: no bias
    padding: tuple[int, int] | None  # zeros on each side (rows, cols), or None: the layer's own
    fused: tuple  # the layers after the conv whose work its output holds: its batch norm[, ReLU]

    @property
    def relu(self) -> bool:
        """Whether the conv applies the ReLU (a post-op)."""
        return len(self.fused) == 2


def conv_fusion(conv: keras.layers.Conv2D, kernel, inputs) -> ConvCall | None:
    """How ``conv`` convolves ``inputs`` now, fused; None: as it is."""
    import torch

    fusion = _FUSIONS.get(conv)
    fusing = fusion is not None and _fusing_now(fusion.model)
    if (fusion is None and not conv.use_bias) or (fusion is not None and not fusing
                                                  and not torch.is_grad_enabled()):
        # A conv that could fold: unmarked, or marked for another model than the one inferring
        # now. Is the model being called one to adopt? (Once per model: examined ones return at
        # once; training, where nothing folds, does not ask for a marked conv.)
        adopt_models_being_called()
        fusion = _FUSIONS.get(conv)
        fusing = fusion is not None and _fusing_now(fusion.model)
    if fusion is None:
        return None
    padding = fusion.padding() if fusion.padding is not None else None
    pad = tuple(p[0] for p in padding.padding) if padding is not None and fused_for(inputs, padding) else None
    bn = fusion.batch_norm()
    if bn is None or not fusing or not bn._torch_fusable(inputs, False, None):
        return None if pad is None else ConvCall(kernel, None, pad, ())
    relu = fusion.relu() if fusion.relu is not None else None
    kernel, bias = _folded(fusion.cache, kernel, bn)
    return ConvCall(kernel, bias, pad, (bn,) if relu is None else (bn, relu))


def _folded(cache: dict, kernel, bn):
    """The kernel with ``bn`` folded in, and its bias; refolded only after a variable changed."""
    import torch

    sources = [keras.ops.convert_to_tensor(v) for v in
               (kernel, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)]
    key = [(id(t), t._version) for t in sources]
    if cache.get("key") != key:
        from keras_regnet.folding import fold_into_conv

        folded = fold_into_conv([keras.ops.convert_to_numpy(kernel)], bn)
        device = sources[0].device
        cache.update(key=key, sources=sources, kernel=torch.as_tensor(folded[0], device=device),
                     bias=torch.as_tensor(folded[1], device=device))
    return cache["kernel"], cache["bias"]


def mark_fused(tensor, *layers: keras.layers.Layer) -> None:
    """Tells ``layers`` that ``tensor`` already holds their work."""
    setattr(tensor, _MARK, layers)


def fused_for(inputs, layer: keras.layers.Layer) -> bool:
    """Whether ``inputs`` already holds ``layer``'s work (it passes them through)."""
    return any(fused is layer for fused in getattr(inputs, _MARK, ()))


def _call_context():
    """Keras's current call context (its entry layer: the outermost layer being called), or None
    where this Keras has none: then nothing fuses."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:
        return None
    context = global_state.get_global_attribute("current_call_ctx")
    return context if hasattr(context, "entry_layer") and hasattr(context, "get_value") else None
