//! MoeOps on CUDA: the layer forward without the permuted copy of the hidden states.
//!
//! route (fused gate) → dispatch indices only (offsets, row_to_token, token_slot_to_row) →
//! grouped GEMM gate/up reading `x` through the gather prologue, with SwiGLU → grouped GEMM down
//! → weighted combine. The GEMMs go through [`GroupedGemmOps`], so the layer uses whatever
//! grouped kernel the backend has. The result equals [`moe_layer_from_primitives`]: the gather
//! reads the same rows the permute would have copied.
//!
//! `MOEKIT_CUDA_MOE=primitives` forces the composition of the public ops; `permuted` keeps the
//! fused layer but copies the routed rows first (the permute op) so that the gate/up GEMM reads
//! contiguous rows, which it loads through TMA (the gather prologue loads them with cp.async).

use crate::{CudaBackend, CudaBuffer};
use moekit_ops::moe::moe_layer_from_primitives;
use moekit_ops::{
    CombineIo, DType, Device, GroupedGemmIo, GroupedGemmOps, MoeLayerIo, MoeLayerProblem, MoeOps, PermuteIo,
    PermuteOps, Result, RouteIo, RouteOps, Validated,
};

/// How the layer runs (`MOEKIT_CUDA_MOE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The public ops one after the other (`primitives`).
    Primitives,
    /// The fused layer with the gather prologue (the default).
    Gather,
    /// The fused layer with the rows permuted first (`permuted`).
    Permuted,
}

fn path() -> Path {
    match std::env::var("MOEKIT_CUDA_MOE").as_deref() {
        Ok("primitives") => Path::Primitives,
        Ok("permuted") => Path::Permuted,
        _ => Path::Gather,
    }
}

impl MoeOps for CudaBackend {
    fn moe_layer(&self, p: &Validated<MoeLayerProblem>, io: MoeLayerIo<'_, CudaBuffer>) -> Result<()> {
        let path = path();
        if path == Path::Primitives {
            return moe_layer_from_primitives(self, p, io);
        }
        let (rp, pp, mut up, dp, cp) = p.parts();
        if path == Path::Gather {
            up.gather_tokens = Some(rp.tokens);
        }
        let (rp, up, dp, cp) = (rp.validate()?, up.validate()?, dp.validate()?, cp.validate()?);
        let pp = pp.validate()?;
        let (t, e, k, i, dt) = (rp.tokens, rp.experts, rp.k, p.inter, rp.dtype);
        let (h, rows) = (p.hidden(), pp.max_rows());
        // NOTE: every intermediate is a fresh stream-ordered allocation per call, left
        // uninitialised because the kernels write all of it before any read: route writes every
        // (token, slot) of ids and weights and zeroes counts and load first; the permute index
        // writes offsets [E+1], row_to_token (all -1 first) and every slot of token_slot_to_row;
        // each grouped GEMM writes its experts' rows and its zero kernel the rest (the down
        // GEMM's TMA reads of act stay inside those rows); the permute copy writes every row.
        let mut ids = self.alloc_uninit(DType::I32, &[t, k])?;
        let mut weights = self.alloc_uninit(DType::F32, &[t, k])?;
        let mut counts = self.alloc_uninit(DType::I32, &[e])?;
        let mut load = self.alloc_uninit(DType::F32, &[e])?;
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
        self.route(&rp, route_io)?;
        if let Some(out) = io.routed {
            self.copy_rows(&ids, 0, out, 0, t)?;
        }

        let mut offsets = self.alloc_uninit(DType::I32, &[e + 1])?;
        let mut row_to_token = self.alloc_uninit(DType::I32, &[rows])?;
        let mut tsr = self.alloc_uninit(DType::I32, &[t, k])?;
        let mut permuted = None;
        if path == Path::Permuted {
            let mut rows_x = self.alloc_uninit(dt, &[rows, h])?;
            let pio = PermuteIo {
                hidden: io.x,
                ids: &ids,
                permuted: &mut rows_x,
                offsets: &mut offsets,
                row_to_token: &mut row_to_token,
                token_slot_to_row: &mut tsr,
            };
            self.permute(&pp, pio)?;
            permuted = Some(rows_x);
        } else {
            self.permute_index(&pp, &ids, &mut offsets, &mut row_to_token, &mut tsr)?;
        }

        let mut act = self.alloc_uninit(dt, &[rows, i])?;
        let up_io = GroupedGemmIo {
            x: permuted.as_ref().unwrap_or(io.x),
            w: io.w_up,
            group: &offsets,
            row_to_token: if permuted.is_some() { None } else { Some(&row_to_token) },
            row_scale: None,
            y: &mut act,
        };
        up.check_io(&up_io)?;
        self.grouped_gemm(&up, up_io)?;

        let mut y = self.alloc_uninit(dt, &[rows, h])?;
        let down_io =
            GroupedGemmIo { x: &act, w: io.w_down, group: &offsets, row_to_token: None, row_scale: None, y: &mut y };
        dp.check_io(&down_io)?;
        self.grouped_gemm(&dp, down_io)?;

        let combine_io = CombineIo { y: &y, weights: &weights, token_slot_to_row: &tsr, add: io.add, out: io.out };
        cp.check_io(&combine_io)?;
        self.unpermute_combine(&cp, combine_io)
    }
}
