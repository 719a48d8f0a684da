//! The tensor maps of the TMA variants of the warp-specialised wgmma kernel
//! (`grouped_gemm_wgmma_ws_tma[2]_*`): their producer loads the weight tile B (and, in the TMA2
//! kernels, the activation tile A) with `cp.async.bulk.tensor` boxes of 4-D tiled tensor maps,
//! 128-byte swizzled, that reproduce the cp.async kernel's shared layouts byte for byte (the box
//! coordinates are in the header of `kernels/grouped_gemm_sm90_ws.cu`).

use crate::backend::device_err;
use cudarc::driver::sys::{
    self, CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapInterleave, CUtensorMapL2promotion,
    CUtensorMapSwizzle,
};
use cudarc::driver::DeviceRepr;
use moekit_ops::{DType, Error, Result, WeightLayout};

const OP: &str = "grouped_gemm";

/// Bytes per weight element (f16 / bf16).
const ELEM: u64 = 2;

/// Bytes of the B tile of one k-tile (`gws::B_BYTES`: 256 virtual columns × 64 k).
pub(crate) const B_TILE_BYTES: u64 = 256 * 64 * ELEM;

/// Bytes of the A tile of one k-tile (`gws::A_BYTES`: 128 rows × 64 k).
pub(crate) const A_TILE_BYTES: u64 = 128 * 64 * ELEM;

/// A 4-D tiled tensor map's geometry (weights or activations), innermost dimension first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapGeometry {
    /// Elements per dimension.
    pub dims: [u64; 4],
    /// Byte strides of dimensions 1, 2 and 3 (dimension 0 is contiguous).
    pub strides: [u64; 3],
    /// Elements per box, per dimension.
    pub boxes: [u32; 4],
    /// Boxes the kernel copies per k-tile.
    pub copies: u64,
    /// Bytes of the tile those boxes fill (the kernel's expect_tx count).
    pub tile: u64,
}

impl MapGeometry {
    /// Bytes of one box (zero-filled elements included: TMA writes and counts the whole box).
    pub(crate) fn box_bytes(&self) -> u64 {
        self.boxes.iter().map(|&b| u64::from(b)).product::<u64>() * ELEM
    }
}

/// The tensor map geometry of the weights `[E, N, K]` (NK) or `[E, K, N]` (KN), 2-byte elements.
/// A SwiGLU problem's N columns are two halves (gate, up) of I = N / 2: each half is an entry of
/// its own dimension (H = 2) so that a box of one half is bounded by I, as the cp.async path's
/// column limit is.
/// - NK: dims (K, C, H, E), box (64, 128, 1, 1): 128 weight rows of 64 k, two boxes per k-tile.
/// - KN: dims (C, H, K, E), box (64, 1, 64, 1): 64 k rows of 64 columns, four boxes per k-tile.
///
/// Plain: C = N, H = 1; SwiGLU: C = I, H = 2.
pub(crate) fn weight_map_geometry(
    layout: WeightLayout,
    experts: usize,
    k: usize,
    n: usize,
    swiglu: bool,
) -> MapGeometry {
    let (e, k, n) = (experts as u64, k as u64, n as u64);
    let (c, h) = if swiglu { (n / 2, 2) } else { (n, 1) };
    match layout {
        WeightLayout::NK => MapGeometry {
            dims: [k, c, h, e],
            strides: [k * ELEM, c * k * ELEM, n * k * ELEM],
            boxes: [64, 128, 1, 1],
            copies: 2,
            tile: B_TILE_BYTES,
        },
        WeightLayout::KN => MapGeometry {
            dims: [c, h, k, e],
            strides: [c * ELEM, n * ELEM, k * n * ELEM],
            boxes: [64, 1, 64, 1],
            copies: 4,
            tile: B_TILE_BYTES,
        },
    }
}

/// Bytes of the ping-pong kernel's B tile of one k-tile (`gpp::B_BYTES`: 128 virtual columns × 64 k).
pub(crate) const B_TILE_BYTES_PP: u64 = 128 * 64 * ELEM;

/// [`weight_map_geometry`] for the ping-pong kernel, whose B tile holds 128 virtual columns
/// (same dims and strides, other boxes):
/// - NK plain: box (64, 128, 1, 1), one per k-tile; SwiGLU: box (64, 64, 2, 1), one per k-tile:
///   64 gate rows, then the 64 up rows of the same columns.
/// - KN: box (64, 1, 64, 1), two per k-tile.
pub(crate) fn weight_map_geometry_pp(
    layout: WeightLayout,
    experts: usize,
    k: usize,
    n: usize,
    swiglu: bool,
) -> MapGeometry {
    let g = weight_map_geometry(layout, experts, k, n, swiglu);
    let (boxes, copies) = match layout {
        WeightLayout::NK if swiglu => ([64, 64, 2, 1], 1),
        WeightLayout::NK => ([64, 128, 1, 1], 1),
        WeightLayout::KN => ([64, 1, 64, 1], 2),
    };
    MapGeometry { boxes, copies, tile: B_TILE_BYTES_PP, ..g }
}

/// The tensor map geometry of the activations `x`, `rows` rows of `k` 2-byte elements (the
/// contiguous `[R, K]` or masked `[E, C, K]` as `E·C` rows): dims (K, R, 1, 1), box (64, 128, 1,
/// 1), one box per k-tile = the A tile of 128 rows.
pub(crate) fn act_map_geometry(rows: usize, k: usize) -> MapGeometry {
    let (r, k) = (rows as u64, k as u64);
    MapGeometry {
        dims: [k, r, 1, 1],
        strides: [k * ELEM, r * k * ELEM, r * k * ELEM],
        boxes: [64, 128, 1, 1],
        copies: 1,
        tile: A_TILE_BYTES,
    }
}

/// Checks the driver's rules for a tiled map that this geometry must meet (the driver checks
/// them again): every dimension in 1..=2^32, strides multiples of 16 below 2^40, boxes in
/// 1..=256, the inner box 128 bytes (the 128-byte swizzle span); and the kernel's: its boxes fill
/// the tile (the expect_tx byte count).
pub(crate) fn check_geometry(g: &MapGeometry) -> Result<()> {
    let dims_ok = g.dims.iter().all(|&d| (1..=1u64 << 32).contains(&d));
    let strides_ok = g.strides.iter().all(|&s| s % 16 == 0 && s < 1u64 << 40);
    let boxes_ok = g.boxes.iter().all(|&b| (1..=256).contains(&b))
        && u64::from(g.boxes[0]) * ELEM == 128
        && g.box_bytes() * g.copies == g.tile;
    if dims_ok && strides_ok && boxes_ok {
        Ok(())
    } else {
        Err(Error::unsupported(OP, format!("no tensor map for {g:?}")))
    }
}

/// The driver's `CUtensorMap`: 128 opaque bytes, 64-byte aligned, passed by value to the kernel's
/// `const __grid_constant__ HpTmap b_map` parameter.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorMap([u64; 16]);

// SAFETY: plain bytes with the size and alignment of the kernel's `HpTmap` (CUtensorMap); cudarc
// passes a pointer to it and cuLaunchKernel copies its 128 bytes into the parameter buffer.
unsafe impl DeviceRepr for TensorMap {}

/// Encodes the tensor map of `geometry` over the tensor at device address `ptr`.
///
/// # Errors
/// [`Error::Unsupported`] for a dtype other than f16/bf16, a pointer not 16-byte aligned or a
/// geometry outside the driver's rules; [`Error::Device`] when `cuTensorMapEncodeTiled` fails.
pub(crate) fn encode_map(ptr: u64, dtype: DType, geometry: &MapGeometry) -> Result<TensorMap> {
    encode_map_for(OP, ptr, dtype, geometry)
}

/// [`encode_map`] for another op (`op` names it in the errors): the attention kernels' maps.
///
/// # Errors
/// As [`encode_map`].
pub(crate) fn encode_map_for(op: &'static str, ptr: u64, dtype: DType, geometry: &MapGeometry) -> Result<TensorMap> {
    let ty = match dtype {
        DType::BF16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        _ => return Err(Error::unsupported(op, format!("no tensor map for {}", dtype.name()))),
    };
    if ptr % 16 != 0 {
        return Err(Error::unsupported(op, "a tensor not 16-byte aligned for a tensor map"));
    }
    if check_geometry(geometry).is_err() {
        return Err(Error::unsupported(op, format!("no tensor map for {geometry:?}")));
    }
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let element_strides = [1u32; 4];
    // SAFETY: `map` is a writable CUtensorMap; the four-entry arrays outlive the call (rank 4,
    // three strides); the driver only records `ptr`, which the caller keeps alive for the launch.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            ty,
            4,
            ptr as *mut std::ffi::c_void,
            geometry.dims.as_ptr(),
            geometry.strides.as_ptr(),
            geometry.boxes.as_ptr(),
            element_strides.as_ptr(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    r.result().map_err(device_err(op))?;
    Ok(TensorMap(map.opaque))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_map_is_128_bytes_64_aligned() {
        assert_eq!((std::mem::size_of::<TensorMap>(), std::mem::align_of::<TensorMap>()), (128, 64));
        assert_eq!(std::mem::size_of::<sys::CUtensorMap>(), 128);
    }

    #[test]
    fn nk_geometry() {
        // qwen3 up, plain: [E=128, N=1536, K=2048].
        let g = weight_map_geometry(WeightLayout::NK, 128, 2048, 1536, false);
        assert_eq!(g.dims, [2048, 1536, 1, 128]);
        assert_eq!(g.strides, [4096, 1536 * 4096, 1536 * 4096]);
        assert_eq!((g.boxes, g.copies), ([64, 128, 1, 1], 2));
        assert_eq!(g.box_bytes() * g.copies, B_TILE_BYTES);
        // SwiGLU: each half bounded by I = 768; the up half starts I rows (I·K·2 bytes) later.
        let g = weight_map_geometry(WeightLayout::NK, 128, 2048, 1536, true);
        assert_eq!(g.dims, [2048, 768, 2, 128]);
        assert_eq!(g.strides, [4096, 768 * 4096, 1536 * 4096]);
        assert!(check_geometry(&g).is_ok());
    }

    #[test]
    fn pingpong_geometry_fills_its_tile() {
        for (layout, swiglu) in
            [(WeightLayout::NK, false), (WeightLayout::NK, true), (WeightLayout::KN, false), (WeightLayout::KN, true)]
        {
            let g = weight_map_geometry_pp(layout, 128, 2048, 1536, swiglu);
            assert_eq!(g.box_bytes() * g.copies, B_TILE_BYTES_PP, "{layout:?} {swiglu}");
            assert!(check_geometry(&g).is_ok(), "{layout:?} {swiglu}");
            assert_eq!(g.dims, weight_map_geometry(layout, 128, 2048, 1536, swiglu).dims);
        }
        // SwiGLU NK: one box spans both halves (H = 2) of 64 rows each.
        let g = weight_map_geometry_pp(WeightLayout::NK, 128, 2048, 1536, true);
        assert_eq!((g.boxes, g.copies), ([64, 64, 2, 1], 1));
    }

    #[test]
    fn kn_geometry() {
        let g = weight_map_geometry(WeightLayout::KN, 8, 64, 24, false);
        assert_eq!(g.dims, [24, 1, 64, 8]);
        assert_eq!(g.strides, [48, 48, 64 * 48]);
        assert_eq!((g.boxes, g.copies), ([64, 1, 64, 1], 4));
        assert_eq!(g.box_bytes() * g.copies, B_TILE_BYTES);
        // SwiGLU, I = 16: the up half starts I columns (32 bytes) later, k rows are N·2 bytes apart.
        let g = weight_map_geometry(WeightLayout::KN, 8, 64, 32, true);
        assert_eq!(g.dims, [16, 2, 64, 8]);
        assert_eq!(g.strides, [32, 64, 64 * 64]);
        assert!(check_geometry(&g).is_ok());
    }

    #[test]
    fn activation_geometry() {
        // The qwen3 down GEMM's A: [R = 131072, K = 768].
        let g = act_map_geometry(131_072, 768);
        assert_eq!(g.dims, [768, 131_072, 1, 1]);
        assert_eq!(g.strides, [1536, 131_072 * 1536, 131_072 * 1536]);
        assert_eq!(g.box_bytes() * g.copies, A_TILE_BYTES);
        assert!(check_geometry(&g).is_ok());
        // No rows or K = 0: no map (the kernel without TMA A runs).
        assert!(check_geometry(&act_map_geometry(0, 64)).is_err());
        assert!(check_geometry(&act_map_geometry(64, 0)).is_err());
    }

    #[test]
    fn geometry_outside_the_rules_is_refused() {
        // N = 4: rows of 8 bytes, not a multiple of 16 (the family needs N % 8 == 0 anyway).
        let g = weight_map_geometry(WeightLayout::KN, 1, 64, 4, false);
        assert!(matches!(check_geometry(&g), Err(Error::Unsupported { .. })));
        let g = weight_map_geometry(WeightLayout::NK, 0, 64, 64, false);
        assert!(check_geometry(&g).is_err());
        assert!(matches!(encode_map(0, DType::F32, &g), Err(Error::Unsupported { .. })));
        let g = weight_map_geometry(WeightLayout::NK, 1, 64, 64, false);
        assert!(matches!(encode_map(8, DType::BF16, &g), Err(Error::Unsupported { .. })));
    }
}
