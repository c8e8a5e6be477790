"""Tracing a potential into an ATen graph, and trimming that graph.

A model's potential, traced through Pyro's handlers by ``make_fx``, holds many nodes that
never change from one step to the next (the priors' parameters expanded and logged,
copies of constants) or that do nothing (subtracting a zero location, dividing by a unit
scale, summing a scalar). Each costs an op dispatch at every step, and dispatch, not
arithmetic, is what a small model's step is made of. The passes here fold the first kind
into constants and drop the second. They only rewrite a graph without in-place ops, and
every rewrite keeps the value, shape and dtype of the node it replaces.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import operator
import warnings
from collections.abc import Callable, Sequence

import pyro
import torch
from torch.distributions import Distribution
from torch.fx import GraphModule, Node

aten = torch.ops.aten

_PASSTHROUGH = {aten.detach.default, aten.lift_fresh_copy.default, aten.alias.default}
# x op c == x when c is this op's neutral element; (neutral, commutative).
_NEUTRAL = {
    aten.add.Tensor: (0.0, True),
    aten.sub.Tensor: (0.0, False),
    aten.mul.Tensor: (1.0, True),
    aten.div.Tensor: (1.0, False),
}
_RESHAPES = {
    aten.view.default,
    aten.reshape.default,
    aten.expand.default,
    aten._unsafe_view.default,
}


@contextlib.contextmanager
def _no_sample_validation():
    # Distributions built before the run (a PyroModule's PyroSample priors, say) keep the
    # validate_args they were born with, and validating a value reads it back as a Python
    # bool: under tracing that is data-dependent control flow. Validation never changes a
    # value, so it is switched off while tracing only.
    original = Distribution._validate_sample
    Distribution._validate_sample = lambda self, value: None
    try:
        yield
    finally:
        Distribution._validate_sample = original


def trace(fn: Callable, *example_inputs: torch.Tensor) -> GraphModule:
    """``make_fx`` in real-tensor mode: data-dependent Python control flow raises."""
    from torch.fx.experimental.proxy_tensor import make_fx

    with pyro.validation_enabled(False), _no_sample_validation():
        return make_fx(fn)(*example_inputs)


def _schema(node: Node):
    return getattr(node.target, "_schema", None)


def _is_mutating(node: Node) -> bool:
    schema = _schema(node)
    return node.op == "call_function" and schema is not None and schema.is_mutable


def _value(node) -> object:
    return node.meta.get("val") if isinstance(node, Node) else node


def _same_meta(a, b) -> bool:
    va, vb = _value(a), _value(b)
    return (
        isinstance(va, torch.Tensor)
        and isinstance(vb, torch.Tensor)
        and va.shape == vb.shape
        and va.dtype == vb.dtype
        and va.device == vb.device
    )


def _constant_equal_to(arg, target: float, constants: dict[Node, torch.Tensor]) -> bool:
    if isinstance(arg, bool):
        return False
    if isinstance(arg, (int, float)):
        return arg == target
    if isinstance(arg, Node) and arg in constants:
        value = constants[arg]
        return value.numel() > 0 and bool((value == target).all())
    return False


# Ops whose result depends only on the shape, dtype and device of their input: the seed of
# the backward pass (ones_like), buffers for scatter (new_zeros), ...
_FILL_VALUE = {
    aten.ones_like.default: lambda node: 1,
    aten.zeros_like.default: lambda node: 0,
    aten.full_like.default: lambda node: node.args[1],
    aten.new_ones.default: lambda node: 1,
    aten.new_zeros.default: lambda node: 0,
    aten.new_full.default: lambda node: node.args[2],
}


# Deterministic factories of a fixed result (no tensor inputs).
_FACTORIES = {
    aten.zeros.default,
    aten.ones.default,
    aten.full.default,
    aten.arange.default,
    aten.arange.start,
    aten.arange.start_step,
    aten.scalar_tensor.default,
}


def _filled_like(node: Node) -> torch.Tensor | None:
    fill = _FILL_VALUE.get(node.target)
    meta = node.meta.get("val")
    if fill is None or not isinstance(meta, torch.Tensor):
        return None
    value = fill(node)
    if isinstance(value, Node):
        return None
    return torch.full(meta.shape, value, dtype=meta.dtype, device=meta.device)


def _fold_constants(graph: GraphModule) -> dict[Node, torch.Tensor]:
    g = graph.graph
    constants: dict[Node, torch.Tensor] = {}
    folded = 0
    for node in list(g.nodes):
        if node.op == "get_attr":
            constants[node] = getattr(graph, node.target)
            continue
        if node.op != "call_function":
            continue
        if node.target in _PASSTHROUGH:
            node.replace_all_uses_with(node.args[0])
            g.erase_node(node)
            continue
        schema = _schema(node)
        inputs = node.all_input_nodes
        value = _filled_like(node)
        if value is not None:
            pass
        elif (
            schema is None
            or schema.is_mutable
            or torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())
            or not (inputs or node.target in _FACTORIES)
            or not all(i in constants for i in inputs)
        ):
            continue
        else:
            args = torch.fx.node.map_arg(node.args, lambda n: constants[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: constants[n])
            value = node.target(*args, **kwargs)
            if not isinstance(value, torch.Tensor):
                continue
        name = f"_folded_{folded}"
        folded += 1
        graph.register_buffer(name, value, persistent=False)
        with g.inserting_before(node):
            replacement = g.get_attr(name)
        replacement.meta["val"] = value
        node.replace_all_uses_with(replacement)
        g.erase_node(node)
        constants[replacement] = value
    return constants


def _identity_input(node: Node, constants: dict[Node, torch.Tensor]) -> Node | None:
    """The input that ``node`` returns unchanged, if it does so, else None."""
    target, args = node.target, node.args
    if target in _NEUTRAL and len(args) == 2 and node.kwargs.get("alpha", 1) == 1:
        neutral, commutative = _NEUTRAL[target]
        x, other = args
        if _constant_equal_to(other, neutral, constants) and _same_meta(x, node):
            return x
        if commutative and _constant_equal_to(x, neutral, constants) and _same_meta(other, node):
            return other
    if target is aten.pow.Tensor_Scalar and args[1] == 1 and _same_meta(args[0], node):
        return args[0]
    if target in _RESHAPES and isinstance(args[0], Node) and _same_meta(args[0], node):
        return args[0]
    if target is aten.sum.default and len(args) == 1 and not node.kwargs:
        value = _value(args[0])
        if isinstance(value, torch.Tensor) and value.dim() == 0 and _same_meta(args[0], node):
            return args[0]
    if target is aten.neg.default:
        inner = args[0]
        if isinstance(inner, Node) and inner.target is aten.neg.default:
            return inner.args[0]
    return None


def _sum_of_flattened(node: Node) -> Node | None:
    """``sum(view(x, [-1]), [-1])`` -> ``x``, to be summed whole."""
    if node.target is not aten.sum.dim_IntList or node.kwargs.get("dtype") is not None:
        return None
    args = node.args
    keepdim = args[2] if len(args) > 2 else node.kwargs.get("keepdim", False)
    if keepdim or list(args[1]) not in ([-1], [0]):
        return None
    inner = args[0]
    if not isinstance(inner, Node) or inner.target not in _RESHAPES:
        return None
    value = _value(inner)
    if not isinstance(value, torch.Tensor) or value.dim() != 1:
        return None
    source = inner.args[0]
    if not isinstance(source, Node) or _value(source) is None:
        return None
    if _value(source).dtype != value.dtype:
        return None
    return source


def _row_gather(node: Node) -> tuple[Node, Node] | None:
    """``index(x, [i])`` with ``i`` a 1-D integer input of the graph (a plate's batch,
    whose indices are never negative) -> ``(x, i)``, for ``index_select(x, 0, i)``: the
    same rows, bit for bit, for half the time (12 against 6 us for 100 rows of a
    1e6 x 10 table)."""
    if node.target is not aten.index.Tensor or len(node.args) != 2:
        return None
    source, indices = node.args
    if not isinstance(indices, (list, tuple)) or len(indices) != 1:
        return None
    (index,) = indices
    if not isinstance(index, Node) or index.op != "placeholder":
        return None
    value = _value(index)
    if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.dtype != torch.int64:
        return None
    return source, index


def simplify(graph: GraphModule) -> GraphModule:
    """Fold constant sub-graphs and drop no-op nodes, in place; returns ``graph``."""
    g = graph.graph
    if any(_is_mutating(node) for node in g.nodes):
        g.eliminate_dead_code()
        graph.recompile()
        return graph
    constants = _fold_constants(graph)
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):
            if node.op != "call_function":
                continue
            same = _identity_input(node, constants)
            if same is not None:
                node.replace_all_uses_with(same)
                g.erase_node(node)
                changed = True
                continue
            gather = _row_gather(node)
            if gather is not None:
                with g.inserting_before(node):
                    rows = g.call_function(aten.index_select.default, (gather[0], 0, gather[1]))
                rows.meta["val"] = node.meta.get("val")
                node.replace_all_uses_with(rows)
                g.erase_node(node)
                changed = True
                continue
            source = _sum_of_flattened(node)
            if source is not None:
                with g.inserting_before(node):
                    whole = g.call_function(aten.sum.default, (source,))
                whole.meta["val"] = node.meta.get("val")
                node.replace_all_uses_with(whole)
                g.erase_node(node)
                changed = True
        g.eliminate_dead_code()
    graph.recompile()
    return graph


def direct_forward(graph: GraphModule) -> Callable:
    """``graph.forward`` with every ATen op called through its C++ handle.

    fx's code calls ``torch.ops.aten.mm.default(...)``, whose Python ``__call__`` costs
    more than the op itself on a small model: on the overhead benchmark's MLP a
    gradient took 301 us through ``graph.forward`` and 246 us this way, with the same
    ops, kernels and results (bit for bit). The graph is left as it is (``vmap`` and
    ``torch.compile`` use it); ops this does not find stay as they were.
    """
    code = graph.graph.python_code(root_module="self")
    source, namespace = code.src, dict(code.globals)
    for node in graph.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            name = "_op_" + str(node.target).replace(".", "_")
            source = source.replace(f"torch.ops.{node.target}(", f"{name}(")
            namespace[name] = node.target._op
    exec(compile(source, "<pyro-csg direct graph>", "exec"), namespace)
    return functools.partial(namespace["forward"], graph)


TORCHSCRIPT_WARM_UP = 3
"""Calls of a TorchScript-traced graph before it is compared with the direct forward:
its profiling executor optimises the graph after the first runs, and the comparison must
see the graph that runs."""


def fast_forward(graph: GraphModule, *example: torch.Tensor) -> Callable:
    """``graph.forward`` run by TorchScript's interpreter where that gives the same
    results bit for bit at ``example`` (the graph's inputs), else :func:`direct_forward`.

    Why: on a small model a step is op dispatch, and TorchScript's interpreter calls the
    same ATen ops without Python between them. The logistic regression's vmapped gradient
    pair (``benchmarks/large_n.py``, N = 1e6, B = 100: 25 ops) took 58 us a call through
    the direct forward and 31 us this way, with the same ops, kernels and results (bit for
    bit, after the profiling executor's warm-up, over 300 fresh batches); tracing takes
    a few milliseconds. Only where every input is on the CPU, where TorchScript fuses
    nothing (``torch._C._jit_can_fuse_on_cpu()`` is false), so the kernels and their order
    are the graph's. ``torch.jit.trace`` is deprecated in favour of :func:`torch.compile`,
    whose build takes seconds (minutes cold) on a CPU, more than a run of tens of
    thousands of steps saves: where TorchScript is gone, fails or disagrees, the direct
    forward runs, as before.

    Example::

        >>> import torch
        >>> from pyro_csg.adapter.graph import direct_forward, fast_forward, trace
        >>> def energy_and_grad(theta):  # U = sum(theta^2) / 2
        ...     return (theta**2).sum() / 2, theta * 1.0
        >>> graph = trace(energy_and_grad, torch.ones(3))
        >>> theta = torch.tensor([0.5, -1.0, 2.0])
        >>> forward = fast_forward(graph, theta)
        >>> isinstance(forward, torch.ScriptMethod)  # on the CPU, where TorchScript runs
        True
        >>> all(torch.equal(a, b) for a, b in zip(forward(theta), direct_forward(graph)(theta)))
        True
    """
    direct = direct_forward(graph)
    cpu = all(not isinstance(x, torch.Tensor) or x.device.type == "cpu" for x in example)
    jit, can_fuse = getattr(torch, "jit", None), getattr(torch._C, "_jit_can_fuse_on_cpu", None)
    if not cpu or jit is None or can_fuse is None or can_fuse():
        return direct
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the deprecation, the tracer's own notes
            traced = jit.trace(graph, example, check_trace=False)
            for _ in range(TORCHSCRIPT_WARM_UP):
                traced(*example)
            same = _identical(traced(*example), direct(*example))
    except Exception:  # noqa: BLE001 -- any failure: the direct forward, as before
        return direct
    return traced.forward if same else direct  # not nn.Module.__call__'s hooks: 2 us a call


def _identical(have, want) -> bool:
    if isinstance(want, torch.Tensor):
        same_type = isinstance(have, torch.Tensor) and have.dtype == want.dtype
        return same_type and torch.equal(have, want)
    if isinstance(want, (tuple, list)):
        return (
            isinstance(have, (tuple, list))
            and len(have) == len(want)
            and all(_identical(a, b) for a, b in zip(have, want, strict=True))
        )
    return have == want


# Ops whose result is finite wherever their tensor arguments are, short of overflow (a
# backward op with them: the gradient of a sum, a product, tanh, ...).
_TOTAL = {
    operator.getitem,
    aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar, aten.rsub.Scalar,
    aten.mul.Tensor, aten.mul.Scalar, aten.neg.default, aten.abs.default, aten.exp.default,
    aten.sum.default, aten.sum.dim_IntList, aten.mean.default, aten.mean.dim,
    aten.mv.default, aten.mm.default, aten.addmm.default, aten.bmm.default, aten.dot.default,
    aten.sigmoid.default, aten.tanh.default, aten.relu.default, aten.softplus.default,
    aten.sigmoid_backward.default, aten.tanh_backward.default,
    aten.threshold_backward.default, aten.softplus_backward.default,
    aten.binary_cross_entropy_with_logits.default, aten.logsumexp.default,
    aten._log_softmax.default, aten._log_softmax_backward_data.default,
    aten._softmax.default, aten._softmax_backward_data.default,
    aten.nll_loss_forward.default, aten.nll_loss_backward.default,
    aten.gather.default, aten.scatter_add.default, aten.index.Tensor, aten.select.int,
    aten.index_select.default,
    aten.select_backward.default, aten.slice_backward.default,
    aten.slice.Tensor, aten.split_with_sizes.default, aten.split.Tensor, aten.cat.default,
    aten.stack.default, aten.clone.default, aten.t.default, aten.transpose.int,
    aten.permute.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.default,
    *_RESHAPES, *_PASSTHROUGH,
}  # fmt: skip


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.device == b.device
        and a.dtype == b.dtype
        and a.data_ptr() == b.data_ptr()
        and a.shape == b.shape
        and a.stride() == b.stride()
    )


def _total(node: Node, graph: GraphModule, finite: Sequence[torch.Tensor] = ()) -> bool:
    """Whether ``node``'s value is finite wherever its inputs are (short of overflow);
    a constant that is one of ``finite`` (the same memory) is taken as checked."""
    if node.op == "get_attr":
        value = getattr(graph, node.target)
        if not isinstance(value, torch.Tensor) or any(_same_memory(value, t) for t in finite):
            return True
        return bool(torch.isfinite(value).all())
    if node.op != "call_function":
        return node.op in ("placeholder", "output")
    if node.target in _TOTAL:
        return True
    args = node.args
    if node.target is aten.pow.Tensor_Scalar:  # x ** n, n a whole number >= 0
        exponent = args[1]
        return isinstance(exponent, (int, float)) and exponent >= 0 and exponent == int(exponent)
    if node.target in (aten.div.Tensor, aten.div.Scalar):  # by a constant without zeros
        divisor = args[1]
        if isinstance(divisor, Node):
            if divisor.op != "get_attr":
                return False
            divisor = getattr(graph, divisor.target)
        return bool(torch.as_tensor(divisor).ne(0).all())
    return False


def lean(graph: GraphModule, finite: Sequence[torch.Tensor] = ()) -> GraphModule | None:
    """The gradient alone of ``graph`` (``(theta, *indices) -> (U~, grad)``), as a graph
    returning ``(grad,)``; ``None`` unless every op of ``graph`` gives a finite result
    wherever its inputs are finite, short of overflow (the ops of :data:`_TOTAL`, a power
    by a whole number, a division by a non-zero constant). Its constants must be finite:
    those that are ``finite``'s tensors (the data, checked already) are not read again
    (at N = 1e7 each read of the logistic regression's features takes 0.65 s).

    Why: on a small model a step's cost is op dispatch, and the potential's own ops are
    about half of them (the logistic regression of ``benchmarks/large_n.py``: 38 ops, 22
    for the gradient; the MLP of ``benchmarks/overhead.py``: 81 and 51), so the sampler
    computes ``U~`` only where it checks or keeps it. Why only such graphs: there ``U~``
    is finite wherever the iterate and the data are, and the sampler checks the iterate
    where it checks ``U~``. A support's edge (a comparison, ``where``, the log of a
    mask), a logarithm, a division by a parameter or any op not known to be total can
    make ``U~`` infinite or NaN at a finite iterate and gradient: those graphs compute it
    at every step.

    Example::

        >>> import torch
        >>> from pyro_csg.adapter.graph import count_ops, lean, trace
        >>> def energy_and_grad(theta):  # U = sum(theta^2) / 2
        ...     return (theta**2).sum() / 2, theta.clone()
        >>> count_ops(lean(trace(energy_and_grad, torch.ones(3))))  # the clone alone
        1
        >>> def with_log(theta):  # U = -sum(log theta): infinite at 0, NaN below
        ...     return -theta.log().sum(), -1 / theta
        >>> lean(trace(with_log, torch.ones(3))) is None
        True
    """
    if not all(_total(node, graph, finite) for node in graph.graph.nodes):
        return None
    lean_graph = GraphModule(graph, copy.deepcopy(graph.graph))
    output = next(node for node in lean_graph.graph.nodes if node.op == "output")
    results = output.args[0]
    if not (isinstance(results, (tuple, list)) and len(results) == 2):
        return None
    output.args = ((results[1],),)
    lean_graph.graph.eliminate_dead_code()
    lean_graph.recompile()
    return lean_graph


def paired(graph: GraphModule, flat, other, indices, inductor: bool = False):
    """``graph`` (``(theta, *indices) -> (U~, grad)``, or ``(grad,)``: :func:`lean`)
    vmapped over two points and traced again, so that a control-variate step's two
    evaluations cost one call of batched ops: ``(flat, other, *indices) -> (outputs at
    flat..., outputs at other...)``, the points stacked and the rows taken apart inside
    the graph (in the interpreter, not from Python: a few µs a call on a small model);
    returned if it agrees with two plain calls (else ``None``). ``inductor``: built by
    :func:`torch.compile` where that agrees too (to 1e-3 of the norm)."""
    over_points = torch.func.vmap(graph.forward, in_dims=(0, *[None] * len(indices)))

    def pair(flat, other, *indices):
        outputs = over_points(torch.stack((flat, other)), *indices)
        return tuple(output[0] for output in outputs) + tuple(output[1] for output in outputs)

    bump = 0.01 * ((torch.arange(flat.numel(), device=flat.device) % 5) - 2)
    points = (flat.detach(), (flat + bump.to(flat.dtype)).detach())

    def agrees(forward, fused: bool) -> bool:
        with torch.no_grad():
            together = forward(*points, *indices)
            count = len(together) // 2
            for row, point in enumerate(points):
                alone = graph.forward(point, *indices)
                size = error = 0.0
                mine = together[row * count : (row + 1) * count]
                for have, want in zip(mine, alone, strict=True):
                    if fused:  # summed in another order: whole vectors, to 1e-3
                        size += float(want.double().norm())
                        error += float((have - want).double().norm())
                        continue
                    scale = 1e-5 * float(want.abs().max()) + 1e-6 if want.numel() else 1e-6
                    if not torch.allclose(have, want, rtol=1e-5, atol=scale):
                        return False
                if fused and not error <= 1e-3 * size + 1e-5:
                    return False
        return True

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = (flat.detach(), other.detach(), *indices)
            paired_graph = simplify(trace(pair, *example))
        forward = fast_forward(paired_graph, *example)
        if not agrees(forward, fused=False):
            return None
    except Exception:  # noqa: BLE001 -- any failure: two calls, as before
        return None
    if inductor:
        try:
            built = torch.compile(paired_graph.forward, fullgraph=True, dynamic=False)
            if agrees(built, fused=True):
                forward = built
        except Exception:  # noqa: BLE001 -- the plain paired graph then
            pass
    return forward


def count_ops(graph: GraphModule) -> int:
    """Number of op calls a run of ``graph`` makes."""
    return sum(1 for node in graph.graph.nodes if node.op == "call_function")


__all__ = [
    "trace", "simplify", "direct_forward", "fast_forward", "lean", "paired", "count_ops"
]  # fmt: skip
