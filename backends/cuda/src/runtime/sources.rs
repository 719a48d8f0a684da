//! The embedded kernel sources, one per op family.

use super::Source;

/// Routing and the bias update, then the fused Hopper (`sm_90a`) gate + routing kernel, which
/// routes with the register path's device functions (the Hopper files compile to nothing
/// elsewhere).
pub(crate) static ROUTE: Source = Source {
    name: "route.cu",
    code: concat!(
        include_str!("../../kernels/route.cu"),
        "\n",
        include_str!("../../kernels/wgmma.cuh"),
        "\n",
        include_str!("../../kernels/route_sm90.cu")
    ),
};
/// Dispatch and combine.
pub(crate) static PERMUTE: Source = Source { name: "permute.cu", code: include_str!("../../kernels/permute.cu") };
/// Grouped GEMM: the portable kernels, then the Hopper (`sm_90a`) wgmma kernels and their
/// warp-specialised variant (with the wgmma helpers they share with routing and the Hopper
/// helpers they share with attention), in one module so
/// they share the plan and zero kernels (the Hopper files compile to nothing elsewhere).
pub(crate) static GROUPED_GEMM: Source = Source {
    name: "grouped_gemm.cu",
    code: concat!(
        include_str!("../../kernels/grouped_gemm.cu"),
        "\n",
        include_str!("../../kernels/wgmma.cuh"),
        "\n",
        include_str!("../../kernels/grouped_gemm_sm90.cu"),
        "\n",
        include_str!("../../kernels/hopper.cuh"),
        "\n",
        include_str!("../../kernels/grouped_gemm_sm90_ws.cu"),
        "\n",
        include_str!("../../kernels/grouped_gemm_sm90_pp.cu")
    ),
};
/// Attention: the portable kernels, then the first Hopper (`sm_90a`) wgmma kernels, in one module
/// so they share the masking helpers (the Hopper file compiles to nothing elsewhere).
pub(crate) static ATTENTION: Source = Source {
    name: "attention.cu",
    code: concat!(include_str!("../../kernels/attention.cu"), "\n", include_str!("../../kernels/attention_sm90.cu")),
};
/// The warp-specialised Hopper attention (the default on `sm_90a`) in a module of its own: the
/// two files above for their helpers only (`ATT_HELPERS_ONLY` leaves their kernels out), the
/// Hopper helpers, then its kernels. Its first use compiles 10 kernels instead of the 27 of one
/// module (NVRTC took ~40 s for those on the H200, run 26).
pub(crate) static ATTENTION_SM90WS: Source = Source {
    name: "attention_sm90_ws.cu",
    code: concat!(
        "#define ATT_HELPERS_ONLY\n",
        include_str!("../../kernels/attention.cu"),
        "\n",
        include_str!("../../kernels/attention_sm90.cu"),
        "\n",
        include_str!("../../kernels/hopper.cuh"),
        "\n",
        include_str!("../../kernels/attention_sm90_ws.cu")
    ),
};
/// The same file's kernels for FlashMask plans with causal blocks (`AWS_CAUSAL_BLOCKS`: those
/// six only), compiled on their first use, not with the others (the ten took 32 s, all sixteen
/// 52 s, through NVRTC and ptxas on a 2-core host).
pub(crate) static ATTENTION_SM90WS_CB: Source = Source {
    name: "attention_sm90_ws_cb.cu",
    code: concat!(
        "#define ATT_HELPERS_ONLY\n#define AWS_CAUSAL_BLOCKS\n",
        include_str!("../../kernels/attention.cu"),
        "\n",
        include_str!("../../kernels/attention_sm90.cu"),
        "\n",
        include_str!("../../kernels/hopper.cuh"),
        "\n",
        include_str!("../../kernels/attention_sm90_ws.cu")
    ),
};
/// Split-KV decode attention (few query rows per sequence, long keys; `Path::Decode`): the
/// portable attention file for its helpers only, the Hopper helpers (for v3's TMA; nothing
/// elsewhere), then the decode and combine kernels.
pub(crate) static ATTENTION_DECODE: Source = Source {
    name: "attention_decode.cu",
    code: concat!(
        "#define ATT_HELPERS_ONLY\n",
        include_str!("../../kernels/attention.cu"),
        "\n",
        include_str!("../../kernels/hopper.cuh"),
        "\n",
        include_str!("../../kernels/attention_decode.cu")
    ),
};
/// Model glue.
pub(crate) static GLUE: Source = Source { name: "glue.cu", code: include_str!("../../kernels/glue.cu") };

/// Every source, for the compile check.
pub(crate) static ALL: [&Source; 8] =
    [&ROUTE, &PERMUTE, &GROUPED_GEMM, &ATTENTION, &ATTENTION_SM90WS, &ATTENTION_SM90WS_CB, &ATTENTION_DECODE, &GLUE];
