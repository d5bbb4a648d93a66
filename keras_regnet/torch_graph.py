"""A model of ours runs on PyTorch by calling its layers' ``call`` directly, in graph order.

Keras's functional model calls each layer through ``Layer.__call__``: input conversion, the
call-context bookkeeping, masks, autocast scopes, activity regularisers, all in Python, for
each of a RegNet's ~240 layers at every call. Eager PyTorch pays it on every forward pass;
TensorFlow and JAX trace it once. RegNetX004's ``predict_on_batch`` on a 2-core AMD EPYC, one
image at 224x224: 81 ms through Keras's graph walk, 35 ms calling the layers' ``call`` in the
same order (docs/performance.md); on a GPU the same host-side cost bounds the images/s.

:func:`call_layers_directly` gives a model that walk, used only while every one of those steps
would do nothing: a call (inference or training: ``training`` None, False or True) on one
float32 input without a mask, every layer float32 (no mixed precision, no quantisation), built, without an
activity regulariser, rematerialisation or PyTorch module hook, outside ``torch.compile`` /
``torch.export`` and Keras's stateless scope. Anything else goes through Keras's own
``Functional.call``. The model's own ``__call__`` still runs (input checks, the call context
that :mod:`keras_regnet.torch_inference` fuses within).
"""

from __future__ import annotations

import contextvars
import inspect
import types
import weakref
from typing import Any, NamedTuple

import keras


class _Step(NamedTuple):
    layer: keras.layers.Layer
    arguments: Any  # Keras's node arguments: fill_in(values) -> (args, kwargs)
    outputs: tuple[int, ...]  # ids of the node's output KerasTensors
    takes_training: bool


class _Plan(NamedTuple):
    input_id: int
    input_rank: int
    steps: tuple[_Step, ...]
    output_ids: tuple[int, ...]  # the model's outputs, flattened ...
    outputs: Any  # ... and their structure (one tensor, a dict of pyramid levels)
    layers: tuple[keras.layers.Layer, ...]


# Keyed by model, out of its attributes (Keras's saving walks those); a copy of the model has no
# plan and calls through Keras.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# The model whose graph the innermost direct walk is running, and its training flag.
_WALKING: contextvars.ContextVar = contextvars.ContextVar("keras_regnet_walking", default=None)


def call_layers_directly(model: keras.Model) -> bool:
    """Lets ``model`` (one input; any outputs) run on PyTorch by calling its layers' ``call`` in
    graph order; False, and nothing changed, on another backend or where its graph cannot be read.

    Example:
        >>> model = keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3))
        >>> call_layers_directly(model) == (keras.backend.backend() == "torch")  # builders do it there
        True
    """
    if keras.backend.backend() != "torch":
        return False
    plan = _plan_of(model)
    if plan is None:
        return False
    _PLANS[model] = plan
    # Bound to this model: a deep copy rebinds it to the copy, which has no plan.
    model.call = types.MethodType(_call, model)
    return True


def calls_directly(model: keras.Model) -> bool:
    """Whether :func:`call_layers_directly` gave ``model`` the direct walk.

    Example:
        >>> calls_directly(keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3))) == (
        ...     keras.backend.backend() == "torch")
        True
    """
    return model in _PLANS


def _plan_of(model: keras.Model) -> _Plan | None:
    """The layers to call, in the order Keras's graph walk calls them, or None where this Keras's
    functional internals are not what the walk reads."""
    if set(getattr(model, "_call_context_args", {"training"})) != {"training"}:
        return None  # a call-context argument the walk would not pass on
    try:
        (model_input,), outputs = model.inputs, model._outputs_struct
        depths = sorted(model._nodes_by_depth, reverse=True)
        known, steps = {id(model_input)}, []
        for depth in depths:
            for node in model._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                if not all(id(t) in known for t in node.input_tensors):
                    continue  # not fed by this model's input (as Keras's walk skips it)
                node.arguments.fill_in  # noqa: B018 (the walk's one Keras call: present?)
                layer = node.operation
                takes_training = "training" in inspect.signature(layer.call).parameters
                steps.append(_Step(layer, node.arguments, tuple(id(t) for t in node.outputs), takes_training))
                known.update(id(t) for t in node.outputs)
    except (AttributeError, TypeError, ValueError):
        return None
    output_ids = tuple(id(t) for t in model.outputs)
    if not all(i in known for i in output_ids):
        return None
    return _Plan(id(model_input), len(model_input.shape), tuple(steps), output_ids, outputs,
                 tuple(step.layer for step in steps))


def _call(self: keras.Model, inputs, training=None, mask=None, **kwargs):
    """The model's ``call``: the direct walk where it is exact, else ``Functional.call``."""
    plan = _PLANS.get(self)
    if plan is not None and mask is None and not kwargs and (training is None or isinstance(training, bool)):
        flat = self._standardize_inputs(inputs)  # as Functional.call: arrays to tensors, rank
        if len(flat) == 1 and _walk_is_exact(plan, flat[0]):
            token = _WALKING.set((self, training))
            try:
                return _walk(plan, flat[0], training)
            finally:
                _WALKING.reset(token)
    return type(self).call(self, inputs, training=training, mask=mask, **kwargs)


def walking_in_inference(model: keras.Model) -> bool:
    """Whether the layer being called now is one of ``model``'s, called by its direct walk in
    inference: then its own graph, whoever called the model (it may be a layer of another).

    Example:
        >>> walking_in_inference(keras_regnet.RegNetX002(weights=None, input_shape=(32, 32, 3)))
        False
    """
    walking = _WALKING.get()
    return walking is not None and walking[0] is model and not walking[1]


def _walk_is_exact(plan: _Plan, inputs) -> bool:
    """Whether skipping ``Layer.__call__`` changes nothing for this call (the module docstring)."""
    import torch

    if not isinstance(inputs, torch.Tensor):
        return False
    if (inputs.dtype != torch.float32 or inputs.is_meta or inputs.dim() != plan.input_rank
            or getattr(inputs, "_keras_mask", None) is not None):
        return False
    if torch.compiler.is_compiling() or getattr(torch.compiler, "is_exporting", lambda: False)():
        return False
    if _in_stateless_scope() or _global_module_hooks():
        return False
    return all(layer.built and layer.dtype_policy.name == "float32" and layer.activity_regularizer is None
               and not getattr(layer, "_remat_mode", None) and not _module_hooks(layer)
               for layer in plan.layers)


def _walk(plan: _Plan, inputs, training):
    values = {plan.input_id: inputs}
    for layer, arguments, outputs, takes_training in plan.steps:
        args, kwargs = arguments.fill_in(values)
        if takes_training and training is not None:
            kwargs["training"] = training  # what Keras's walk passes on (None: nothing)
        result = layer.call(*args, **kwargs)
        if len(outputs) == 1:
            values[outputs[0]] = result
        else:
            values.update(zip(outputs, keras.tree.flatten(result)))
    return keras.tree.pack_sequence_as(plan.outputs, [values[i] for i in plan.output_ids])


def _module_hooks(layer) -> bool:
    """Whether PyTorch hooks are registered on the layer (Keras's call runs them: it goes through
    ``torch.nn.Module.__call__``)."""
    return bool(layer._forward_hooks or layer._forward_pre_hooks or layer._backward_hooks
                or layer._backward_pre_hooks)


def _global_module_hooks() -> bool:
    """Whether PyTorch hooks are registered for every module."""
    from torch.nn.modules import module

    return any(getattr(module, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
        "_global_backward_pre_hooks"))


def _in_stateless_scope() -> bool:
    try:
        from keras.src.backend.common.stateless_scope import in_stateless_scope
    except ImportError:
        return True  # cannot tell: Keras's own walk
    return in_stateless_scope()
