"""Four-wide float32 vector operations for the compiled sweeps of :mod:`smoothadv.smoothing.cholesky`.

A factor entry of a refined solve holds the values of a group's lanes side by side, padded to
:data:`WIDTH` float32 numbers (16 bytes): one vector load, one fused multiply-add and one store per
entry, instead of a scalar load, multiply and store per lane. Numba does not vectorise these loops by
itself (its SLP vectoriser is off, and turning it on is process-wide), so the loops over a column's
entries are written here in LLVM IR, as Numba intrinsics. They do no bounds checks: the callers pass
valid columns. The kernels that use them are cached on disk by Numba, which does not notice a change made
in this file alone: clear that cache (``__pycache__``) after one.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Float32 values per factor entry and per row of a sweep's work array: one 128-bit vector.
WIDTH = 4

_VECTOR = ir.VectorType(ir.FloatType(), WIDTH)
_INT32 = ir.IntType(32)


def _row_pointer(context, builder, array_type, array, row):
    """Pointer to ``array[row, 0]`` of a C-contiguous 2-d array, as a pointer to a vector."""
    view = context.make_array(array_type)(context, builder, array)
    zero = context.get_constant(types.intp, 0)
    pointer = cgutils.get_item_pointer(context, builder, array_type, view, [row, zero], wraparound=False)
    return builder.bitcast(pointer, _VECTOR.as_pointer())


def _fused_multiply_add(builder, a, b, c):
    """``a * b + c``, fused where the CPU has a fast fused multiply-add (LLVM's ``fmuladd``)."""
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3), f"llvm.fmuladd.v{WIDTH}f32")
    return builder.call(function, [a, b, c])


def _is_float32_matrix(value) -> bool:
    return isinstance(value, types.Array) and value.dtype == types.float32 and value.ndim == 2


def _is_int32_vector(value) -> bool:
    return isinstance(value, types.Array) and value.dtype == types.int32 and value.ndim == 1


def _row_of(context, builder, indices_type, indices, position):
    """``indices[position]`` (int32) widened to intp."""
    view = context.make_array(indices_type)(context, builder, indices)
    pointer = cgutils.get_item_pointer(context, builder, indices_type, view, [position], wraparound=False)
    return builder.sext(builder.load(pointer), ir.IntType(64))


@intrinsic
def scatter_column(typingctx, target, offset, values, indices, start, end, x0, x1, x2, x3):
    """``target[indices[p] - offset, :] -= values[p, :] * x`` for p in ``start:end``.

    target (rows, 4) and values (entries, 4) float32, C-contiguous; indices int32; x0..x3 float32, the
    solved values of the column's lanes."""
    def codegen(context, builder, signature, arguments):
        target_type, _, values_type, indices_type = signature.args[:4]
        target_array, offset_value, values_array, indices_array, first, stop, *lanes = arguments
        negated = ir.Constant(_VECTOR, ir.Undefined)
        for lane, value in enumerate(lanes):
            negated = builder.insert_element(negated, builder.fneg(value), ir.Constant(_INT32, lane))
        with cgutils.for_range(builder, builder.sub(stop, first)) as loop:
            position = builder.add(loop.index, first)
            row = builder.sub(_row_of(context, builder, indices_type, indices_array, position), offset_value)
            target_row = _row_pointer(context, builder, target_type, target_array, row)
            entry = builder.load(_row_pointer(context, builder, values_type, values_array, position), align=4)
            updated = _fused_multiply_add(builder, entry, negated, builder.load(target_row, align=4))
            builder.store(updated, target_row, align=4)
        return context.get_dummy_value()

    if not (_is_float32_matrix(target) and _is_float32_matrix(values) and _is_int32_vector(indices)):
        return None
    lanes = (types.float32,) * WIDTH
    signature = types.void(target, types.intp, values, indices, types.intp, types.intp, *lanes)
    return signature, codegen


@intrinsic
def gather_column(typingctx, work, values, indices, start, end):
    """``sum over p in start:end of values[p, :] * work[indices[p], :]``, as a tuple of 4 float32.

    work (rows, 4) and values (entries, 4) float32, C-contiguous; indices int32. Two sums are kept (even
    and odd entries), so that consecutive additions do not wait on each other."""
    def codegen(context, builder, signature, arguments):
        work_type, values_type, indices_type = signature.args[:3]
        work_array, values_array, indices_array, first, stop = arguments
        zero = ir.Constant(_VECTOR, [ir.Constant(ir.FloatType(), 0.0)] * WIDTH)
        sums = [cgutils.alloca_once_value(builder, zero), cgutils.alloca_once_value(builder, zero)]
        one = ir.Constant(first.type, 1)

        def add_entry(position, total):
            row = _row_of(context, builder, indices_type, indices_array, position)
            entry = builder.load(_row_pointer(context, builder, values_type, values_array, position), align=4)
            other = builder.load(_row_pointer(context, builder, work_type, work_array, row), align=4)
            builder.store(_fused_multiply_add(builder, entry, other, builder.load(total)), total)

        count = builder.sub(stop, first)
        pairs = builder.ashr(count, one)
        with cgutils.for_range(builder, pairs) as loop:
            position = builder.add(builder.shl(loop.index, one), first)
            add_entry(position, sums[0])
            add_entry(builder.add(position, one), sums[1])
        odd = builder.and_(builder.icmp_signed("!=", builder.shl(pairs, one), count),
                           builder.icmp_signed(">", count, ir.Constant(count.type, 0)))
        with builder.if_then(odd):  # the last entry of an odd count (none for an empty range)
            add_entry(builder.sub(stop, one), sums[0])
        total = builder.fadd(builder.load(sums[0]), builder.load(sums[1]))
        lanes = [builder.extract_element(total, ir.Constant(_INT32, lane)) for lane in range(WIDTH)]
        return context.make_tuple(builder, signature.return_type, lanes)

    if not (_is_float32_matrix(work) and _is_float32_matrix(values) and _is_int32_vector(indices)):
        return None
    return types.UniTuple(types.float32, WIDTH)(work, values, indices, types.intp, types.intp), codegen
