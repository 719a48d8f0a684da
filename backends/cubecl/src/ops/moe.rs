//! [`MoeOps`] on cubecl: the layer forward without the permuted copy of the hidden states and
//! without per-call zeroed intermediates.
//!
//! route (fused gate; its f32 logits in scratch) → dispatch indices only (offsets,
//! row_to_token, token_slot_to_row: [`index`], shared with the permute op) → grouped GEMM gate/up reading `x` through the
//! gather prologue (`row_to_token`), with SwiGLU → grouped GEMM down → weighted combine. The
//! GEMMs go through [`GroupedGemmOps::grouped_gemm`], so the layer uses whatever grouped kernel
//! the backend picks. The result equals [`moe_layer_from_primitives`]: the gather reads the
//! rows the permute would have copied, in the same order.
//!
//! Every intermediate lives in the backend's grow-only [`MoeScratch`] and is not zeroed: each
//! one is written whole before it is read (ids, weights, counts, load by the route; offsets,
//! row_to_token (every row of `R = T·k`, −1 first), token_slot_to_row by the dispatch; `act`
//! and `y` by the GEMMs, which write every row of the contiguous layout).
//!
//! `MOEKIT_CUBECL_MOE=primitives` forces the composition of the public ops.

use super::permute::index;
use super::route::route_into;
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use cubecl::server::Handle;
use moekit_ops::moe::moe_layer_from_primitives;
use moekit_ops::Device as _;
use moekit_ops::{
    CombineIo, DType, Error, GroupedGemmIo, GroupedGemmOps, MoeLayerIo, MoeLayerProblem, MoeOps, PermuteOps, Result,
    RouteIo, Validated,
};
use std::sync::{Mutex, MutexGuard};

/// Environment override: `primitives` runs [`moe_layer_from_primitives`] instead.
pub(crate) const MOE_ENV: &str = "MOEKIT_CUBECL_MOE";

const OP: &str = "moe_layer";

/// The layer's intermediates, one device allocation each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Ids,
    Weights,
    Counts,
    Load,
    Logits,
    Offsets,
    RowToToken,
    TokenSlotToRow,
    ChunkCounts,
    Sizes,
    Act,
    Y,
}

/// Number of [`Slot`]s.
const SLOTS: usize = 12;

/// Grow-only scratch of the fused layer: per slot the largest allocation asked for so far
/// (bytes), reused by every later call (the launches of one client run in order, so a call's
/// kernels see the scratch only after the previous call's kernels are done with it).
#[derive(Default)]
pub(crate) struct MoeScratch {
    slots: Mutex<[Option<(Handle, usize)>; SLOTS]>,
}

impl std::fmt::Debug for MoeScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoeScratch").finish_non_exhaustive()
    }
}

/// The locked scratch of one layer call.
struct Held<'a, R: Runtime> {
    b: &'a CubeBackend<R>,
    slots: MutexGuard<'a, [Option<(Handle, usize)>; SLOTS]>,
}

impl<R: Runtime> Held<'_, R> {
    /// The handle of `slot`, at least `bytes` long (at least 16), grown when too small.
    ///
    /// NOTE: a grown slot is zeroed once. The kernels never use what they did not write, but
    /// the grouped GEMMs load their first element in place of rows past an expert (and discard
    /// it), which compute-sanitizer's initcheck reports as a read of uninitialised memory when
    /// nothing wrote that row (a masked layout whose first expert is empty).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold it (the slot keeps what it held).
    fn handle(&mut self, slot: Slot, bytes: usize) -> Result<Handle> {
        let bytes = bytes.max(16).next_multiple_of(4);
        let entry = &mut self.slots[slot as usize];
        match entry {
            Some((h, size)) if *size >= bytes => Ok(h.clone()),
            _ => {
                // NOTE: the old allocation (if any) is released when its last handle drops;
                // kernels already queued on it keep it alive in the client.
                let h = self.b.scratch("moe_layer", bytes)?;
                self.b.zero_words("moe_layer", &h, bytes / 4)?;
                *entry = Some((h.clone(), bytes));
                Ok(h)
            }
        }
    }

    /// A tensor of `dtype` and `shape` over the scratch of `slot`, not zeroed.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold it.
    fn buffer(&mut self, slot: Slot, dtype: DType, shape: &[usize]) -> Result<CubeBuffer> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        Ok(CubeBuffer { dtype, shape: shape.to_vec(), handle: self.handle(slot, bytes)? })
    }
}

impl<R: Runtime> CubeBackend<R> {
    /// The scratch, locked for one layer call.
    ///
    /// # Errors
    /// [`Error::Device`] when a previous holder panicked.
    fn held(&self) -> Result<Held<'_, R>> {
        let slots = self.moe_scratch.slots.lock().map_err(|_| Error::Device {
            op: OP,
            backend: self.name,
            msg: "the MoE scratch lock is poisoned".into(),
        })?;
        Ok(Held { b: self, slots })
    }
}

impl<R: Runtime> MoeOps for CubeBackend<R> {
    fn moe_layer(&self, p: &Validated<MoeLayerProblem>, io: MoeLayerIo<'_, CubeBuffer>) -> Result<()> {
        if std::env::var(MOE_ENV).is_ok_and(|v| v.trim() == "primitives") {
            return moe_layer_from_primitives(self, p, io);
        }
        let (rp, pp, mut up, dp, cp) = p.parts();
        up.gather_tokens = Some(rp.tokens);
        let (rp, pp, up, dp, cp) = (rp.validate()?, pp.validate()?, up.validate()?, dp.validate()?, cp.validate()?);
        let (t, e, k, i, dt) = (rp.tokens, rp.experts, rp.k, p.inter, rp.dtype);
        let (h, rows) = (p.hidden(), pp.max_rows());
        // NOTE: held for the whole call, so two threads sharing the backend never interleave
        // launches on the same scratch.
        let mut s = self.held()?;

        let mut ids = s.buffer(Slot::Ids, DType::I32, &[t, k])?;
        let mut weights = s.buffer(Slot::Weights, DType::F32, &[t, k])?;
        let mut counts = s.buffer(Slot::Counts, DType::I32, &[e])?;
        let mut load = s.buffer(Slot::Load, DType::F32, &[e])?;
        let logits = s.handle(Slot::Logits, 4 * t * e)?;
        let route_io = RouteIo {
            logits: io.x,
            gate: Some(io.gate),
            bias: io.bias,
            ids: &mut ids,
            weights: &mut weights,
            counts: &mut counts,
            load: &mut load,
        };
        rp.check_io(&route_io)?;
        route_into(self, &rp, route_io, Some(logits))?;
        if let Some(out) = io.routed {
            self.copy_rows(&ids, 0, out, 0, t)?;
        }

        let mut offsets = s.buffer(Slot::Offsets, DType::I32, &[e + 1])?;
        let mut row_to_token = s.buffer(Slot::RowToToken, DType::I32, &[rows])?;
        let mut tsr = s.buffer(Slot::TokenSlotToRow, DType::I32, &[t, k])?;
        let chunks = index::chunks(&pp);
        let cc = s.handle(Slot::ChunkCounts, 4 * e * chunks)?;
        let sizes = s.handle(Slot::Sizes, 4 * e)?;
        index::dispatch_index(
            self,
            &pp,
            index::IndexIo { ids: &ids, offsets: &mut offsets, row_to_token: &mut row_to_token, tsr: &mut tsr },
            cc,
            sizes,
        )?;

        let mut act = s.buffer(Slot::Act, dt, &[rows, i])?;
        let up_io = GroupedGemmIo {
            x: io.x,
            w: io.w_up,
            group: &offsets,
            row_to_token: Some(&row_to_token),
            row_scale: None,
            y: &mut act,
        };
        up.check_io(&up_io)?;
        self.grouped_gemm(&up, up_io)?;

        let mut y = s.buffer(Slot::Y, dt, &[rows, h])?;
        let down_io =
            GroupedGemmIo { x: &act, w: io.w_down, group: &offsets, row_to_token: None, row_scale: None, y: &mut y };
        dp.check_io(&down_io)?;
        self.grouped_gemm(&dp, down_io)?;

        let combine_io = CombineIo { y: &y, weights: &weights, token_slot_to_row: &tsr, add: io.add, out: io.out };
        cp.check_io(&combine_io)?;
        self.unpermute_combine(&cp, combine_io)
    }
}
