"""Vector operations for the compiled sweeps of :mod:`smoothadv.smoothing.cholesky`.

A factor entry of a refined solve holds the values of a group's lanes side by side, padded to
:data:`WIDTH` float32 numbers (16 bytes); an entry of an exact solve, those of a block of
:data:`EXACT_WIDTH` float64 lanes (64 bytes, a cache line). Either way a sweep does one vector load, one
fused multiply-add and one store per entry, instead of a scalar load, multiply and store per lane. Numba
does not vectorise these loops by itself (its SLP vectoriser is off, and turning it on is process-wide),
so the loops over a column's entries are written here in LLVM IR, as Numba intrinsics. They do no bounds
checks: the callers pass valid columns. The kernels that use them are cached on disk by Numba, which does
not notice a change made in this file alone: clear that cache (``__pycache__``) after one.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Float32 values per factor entry and per row of a refined sweep's work array: one 128-bit vector.
WIDTH = 4
#: Float64 values per factor entry and per row of an exact sweep's work array: one 512-bit vector.
EXACT_WIDTH = 8

_VECTOR = ir.VectorType(ir.FloatType(), WIDTH)
_EXACT_VECTOR = ir.VectorType(ir.DoubleType(), EXACT_WIDTH)
_INT32 = ir.IntType(32)


def _row_pointer(context, builder, array_type, array, row, vector=_VECTOR):
    """Pointer to ``array[row, 0]`` of a C-contiguous 2-d array, as a pointer to a vector."""
    view = context.make_array(array_type)(context, builder, array)
    zero = context.get_constant(types.intp, 0)
    pointer = cgutils.get_item_pointer(context, builder, array_type, view, [row, zero], wraparound=False)
    return builder.bitcast(pointer, vector.as_pointer())


def _fused_multiply_add(builder, a, b, c):
    """``a * b + c``, fused where the CPU has a fast fused multiply-add (LLVM's ``fmuladd``)."""
    vector = a.type
    element = "f32" if vector.element == ir.FloatType() else "f64"
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fmuladd.v{vector.count}{element}")
    return builder.call(function, [a, b, c])


def _is_matrix(value, dtype=types.float32) -> bool:
    return isinstance(value, types.Array) and value.dtype == dtype and value.ndim == 2


def _is_float32_matrix(value) -> bool:
    return _is_matrix(value, types.float32)


def _is_int32_vector(value) -> bool:
    return isinstance(value, types.Array) and value.dtype == types.int32 and value.ndim == 1


def _is_index_vector(value) -> bool:
    return isinstance(value, types.Array) and value.dtype in (types.int32, types.int64) and value.ndim == 1


def _row_of(context, builder, indices_type, indices, position):
    """``indices[position]`` (int32 or int64) as intp."""
    view = context.make_array(indices_type)(context, builder, indices)
    pointer = cgutils.get_item_pointer(context, builder, indices_type, view, [position], wraparound=False)
    value = builder.load(pointer)
    return value if value.type.width == 64 else builder.sext(value, ir.IntType(64))


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
        total = _gather_sum(context, builder, work_type, work_array, values_type, values_array, indices_type,
                            indices_array, first, stop, _VECTOR)
        lanes = [builder.extract_element(total, ir.Constant(_INT32, lane)) for lane in range(WIDTH)]
        return context.make_tuple(builder, signature.return_type, lanes)

    if not (_is_float32_matrix(work) and _is_float32_matrix(values) and _is_int32_vector(indices)):
        return None
    return types.UniTuple(types.float32, WIDTH)(work, values, indices, types.intp, types.intp), codegen


def _gather_sum(context, builder, work_type, work, values_type, values, indices_type, indices, first, stop,
                vector):
    """IR of ``sum over p in first:stop of values[p, :] * work[indices[p], :]`` (a vector), in two sums
    (even and odd entries), so that consecutive additions do not wait on each other; zero for an empty or
    negative range."""
    alignment = 4 if vector.element == ir.FloatType() else 8
    zero = ir.Constant(vector, [ir.Constant(vector.element, 0.0)] * vector.count)
    sums = [cgutils.alloca_once_value(builder, zero), cgutils.alloca_once_value(builder, zero)]
    one = ir.Constant(first.type, 1)

    def add_entry(position, total):
        row = _row_of(context, builder, indices_type, indices, position)
        entry = builder.load(_row_pointer(context, builder, values_type, values, position, vector),
                             align=alignment)
        other = builder.load(_row_pointer(context, builder, work_type, work, row, vector), align=alignment)
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
    return builder.fadd(builder.load(sums[0]), builder.load(sums[1]))


def _exact_signature(work, values, indices):
    if not (_is_matrix(work, types.float64) and _is_matrix(values, types.float64)
            and _is_index_vector(indices)):
        return None
    return types.void(work, values, indices, types.intp, types.intp, types.intp)


@intrinsic
def exact_forward(typingctx, work, values, indices, column, start, end):
    """Column j = ``column`` of an exact forward sweep ``L y = b`` over one block of :data:`EXACT_WIDTH`
    lanes: ``work[j] *= values[start]`` (the stored ``1 / L_jj``), then ``work[indices[p]] -= values[p] *
    work[j]`` for p in ``start + 1:end``.

    work (n, 8) and values (entries, 8) float64, C-contiguous; indices int32 or int64."""
    def codegen(context, builder, signature, arguments):
        work_type, values_type, indices_type = signature.args[:3]
        work_array, values_array, indices_array, column_index, first, stop = arguments
        solved = _row_pointer(context, builder, work_type, work_array, column_index, _EXACT_VECTOR)
        diagonal = _row_pointer(context, builder, values_type, values_array, first, _EXACT_VECTOR)
        value = builder.fmul(builder.load(solved, align=8), builder.load(diagonal, align=8))
        builder.store(value, solved, align=8)
        negated = builder.fneg(value)
        begin = builder.add(first, ir.Constant(first.type, 1))
        with cgutils.for_range(builder, builder.sub(stop, begin)) as loop:
            position = builder.add(loop.index, begin)
            row = _row_of(context, builder, indices_type, indices_array, position)
            target = _row_pointer(context, builder, work_type, work_array, row, _EXACT_VECTOR)
            entry = builder.load(_row_pointer(context, builder, values_type, values_array, position,
                                              _EXACT_VECTOR), align=8)
            builder.store(_fused_multiply_add(builder, entry, negated, builder.load(target, align=8)), target,
                          align=8)
        return context.get_dummy_value()

    signature = _exact_signature(work, values, indices)
    return None if signature is None else (signature, codegen)


@intrinsic
def exact_backward(typingctx, work, values, indices, column, start, end):
    """Column j = ``column`` of an exact backward sweep ``L^T x = y`` over one block of
    :data:`EXACT_WIDTH` lanes: ``work[j] = (work[j] - sum over p in start + 1:end of values[p] *
    work[indices[p]]) * values[start]``.

    work (n, 8) and values (entries, 8) float64, C-contiguous; indices int32 or int64."""
    def codegen(context, builder, signature, arguments):
        work_type, values_type, indices_type = signature.args[:3]
        work_array, values_array, indices_array, column_index, first, stop = arguments
        begin = builder.add(first, ir.Constant(first.type, 1))
        total = _gather_sum(context, builder, work_type, work_array, values_type, values_array, indices_type,
                            indices_array, begin, stop, _EXACT_VECTOR)
        solved = _row_pointer(context, builder, work_type, work_array, column_index, _EXACT_VECTOR)
        diagonal = _row_pointer(context, builder, values_type, values_array, first, _EXACT_VECTOR)
        value = builder.fmul(builder.fsub(builder.load(solved, align=8), total),
                             builder.load(diagonal, align=8))
        builder.store(value, solved, align=8)
        return context.get_dummy_value()

    signature = _exact_signature(work, values, indices)
    return None if signature is None else (signature, codegen)
