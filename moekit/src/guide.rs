//! # A runnable example per op family
//!
//! Each example runs on the [`CpuBackend`](crate::CpuBackend) through the checked entry
//! points of [`crate::ops::api`]. Inputs go to the device with
//! [`Device::upload`](crate::Device::upload), outputs are allocated with
//! [`Device::alloc`](crate::Device::alloc) and read back with
//! [`Device::download`](crate::Device::download), so the same code runs on any backend.
//!
//! ## Routing
//!
//! Softmax top-2 over 4 experts for one token, renormalised over the two chosen:
//!
//! ```
//! use moekit::ops::api;
//! use moekit::{CpuBackend, DType, Device, HostTensor, RouteIo, RouteProblem};
//!
//! let dev = CpuBackend::new();
//! let mut p = RouteProblem::new(1, 4, 2, DType::F32); // [T = 1, E = 4], k = 2
//! p.renormalize = true;
//! let logits = dev.upload(&HostTensor::from_f32(DType::F32, &[1, 4], &[0.1, 2.0, -1.0, 1.0]))?;
//! let mut ids = dev.alloc(DType::I32, &[1, 2])?;
//! let mut weights = dev.alloc(DType::F32, &[1, 2])?;
//! let mut counts = dev.alloc(DType::I32, &[4])?;
//! let mut load = dev.alloc(DType::F32, &[4])?;
//! let io = RouteIo {
//!     logits: &logits,
//!     gate: None,
//!     bias: None,
//!     ids: &mut ids,
//!     weights: &mut weights,
//!     counts: &mut counts,
//!     load: &mut load,
//! };
//! api::route(&dev, &p, io)?;
//! assert_eq!(dev.download(&ids)?.as_i32()?, &[1, 3]); // best expert first
//! assert_eq!(dev.download(&counts)?.as_i32()?, &[0, 1, 0, 1]);
//! let w = dev.download(&weights)?.to_f32_vec();
//! assert!((w[0] + w[1] - 1.0).abs() < 1e-6 && w[0] > w[1]);
//! # Ok::<(), moekit::Error>(())
//! ```
//!
//! ## Permutation and weighted combine
//!
//! Dispatch 3 tokens (k = 2) to 2 experts, then gather them back with weights 0.5: the
//! round trip gives the tokens back.
//!
//! ```
//! use moekit::ops::api;
//! use moekit::{CombineIo, CombineProblem, CpuBackend, DType, Device, HostTensor, PermuteIo, PermuteProblem};
//!
//! let dev = CpuBackend::new();
//! let (t, h, e, k) = (3, 2, 2, 2);
//! let p = PermuteProblem { tokens: t, hidden: h, experts: e, k, align: 1, dtype: DType::F32 };
//! let rows = p.max_rows(); // T·k = 6
//! let hidden = dev.upload(&HostTensor::from_f32(DType::F32, &[t, h], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
//! let ids = dev.upload(&HostTensor::from_i32(&[t, k], &[0, 1, 1, 0, 0, 1]))?;
//! let mut permuted = dev.alloc(DType::F32, &[rows, h])?;
//! let mut offsets = dev.alloc(DType::I32, &[e + 1])?;
//! let mut row_to_token = dev.alloc(DType::I32, &[rows])?;
//! let mut token_slot_to_row = dev.alloc(DType::I32, &[t, k])?;
//! let io = PermuteIo {
//!     hidden: &hidden,
//!     ids: &ids,
//!     permuted: &mut permuted,
//!     offsets: &mut offsets,
//!     row_to_token: &mut row_to_token,
//!     token_slot_to_row: &mut token_slot_to_row,
//! };
//! api::permute(&dev, &p, io)?;
//! assert_eq!(dev.download(&offsets)?.as_i32()?, &[0, 3, 6]); // 3 rows per expert
//! assert_eq!(dev.download(&row_to_token)?.as_i32()?, &[0, 1, 2, 0, 1, 2]); // stable
//!
//! let c = CombineProblem { tokens: t, hidden: h, k, rows, add: false, dtype: DType::F32 };
//! let weights = dev.upload(&HostTensor::from_f32(DType::F32, &[t, k], &[0.5; 6]))?;
//! let mut out = dev.alloc(DType::F32, &[t, h])?;
//! let io = CombineIo { y: &permuted, weights: &weights, token_slot_to_row: &token_slot_to_row, add: None, out: &mut out };
//! api::unpermute_combine(&dev, &c, io)?;
//! assert_eq!(dev.download(&out)?, dev.download(&hidden)?);
//! # Ok::<(), moekit::Error>(())
//! ```
//!
//! ## Grouped GEMM
//!
//! Three rows in the contiguous layout: rows 0..2 go to expert 0 (weight = identity), row 2
//! to expert 1 (weight = 2·identity).
//!
//! ```
//! use moekit::ops::api;
//! use moekit::{CpuBackend, DType, Device, GroupedGemmIo, GroupedGemmProblem, HostTensor};
//!
//! let dev = CpuBackend::new();
//! let p = GroupedGemmProblem::contiguous(3, 2, 2, 2, DType::F32); // R = 3, E = 2, K = N = 2
//! let x = dev.upload(&HostTensor::from_f32(DType::F32, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
//! let w = [1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0]; // [E, K, N]
//! let w = dev.upload(&HostTensor::from_f32(DType::F32, &[2, 2, 2], &w))?;
//! let offsets = dev.upload(&HostTensor::from_i32(&[3], &[0, 2, 3]))?;
//! let mut y = dev.alloc(DType::F32, &[3, 2])?;
//! let io = GroupedGemmIo { x: &x, w: &w, group: &offsets, row_to_token: None, row_scale: None, y: &mut y };
//! api::grouped_gemm(&dev, &p, io)?;
//! assert_eq!(dev.download(&y)?.to_f32_vec(), vec![1.0, 2.0, 3.0, 4.0, 10.0, 12.0]);
//! # Ok::<(), moekit::Error>(())
//! ```
//!
//! ## Attention
//!
//! One causal sequence of two tokens, one head, `D = 64`. With `q = 0` every allowed score
//! is 0: row 0 sees key 0 alone (output `v[0]`, log-sum-exp 0), row 1 averages both values
//! (log-sum-exp `ln 2`).
//!
//! ```
//! use moekit::ops::api;
//! use moekit::{AttentionIo, AttentionMask, AttentionProblem, CpuBackend, DType, Device, HostTensor};
//!
//! let dev = CpuBackend::new();
//! let d = 64;
//! let p = AttentionProblem {
//!     cu_seqlens_q: vec![0, 2],
//!     cu_seqlens_k: vec![0, 2],
//!     heads_q: 1,
//!     heads_kv: 1,
//!     head_dim: d,
//!     scale: 1.0 / (d as f32).sqrt(),
//!     softcap: None,
//!     mask: AttentionMask::causal(),
//!     dtype: DType::F32,
//! };
//! let q = dev.upload(&HostTensor::zeros(DType::F32, &[2, 1, d]))?;
//! let k = dev.upload(&HostTensor::full(DType::F32, &[2, 1, d], 1.0))?;
//! let v: Vec<f32> = (0..2 * d).map(|i| if i < d { 1.0 } else { 3.0 }).collect();
//! let v = dev.upload(&HostTensor::from_f32(DType::F32, &[2, 1, d], &v))?;
//! let mut o = dev.alloc(DType::F32, &[2, 1, d])?;
//! let mut lse = dev.alloc(DType::F32, &[1, 2])?;
//! api::attention(&dev, &p, AttentionIo { q: &q, k: &k, v: &v, o: &mut o, lse: &mut lse })?;
//! let o = dev.download(&o)?.to_f32_vec();
//! assert!(o[..d].iter().all(|&x| (x - 1.0).abs() < 1e-6));
//! assert!(o[d..].iter().all(|&x| (x - 2.0).abs() < 1e-6));
//! let lse = dev.download(&lse)?.to_f32_vec();
//! assert!(lse[0].abs() < 1e-6 && (lse[1] - 2f32.ln()).abs() < 1e-6);
//! # Ok::<(), moekit::Error>(())
//! ```
//!
//! ## Model glue
//!
//! RMSNorm of a constant row gives the weight back; a dense GEMM multiplies by a matrix.
//!
//! ```
//! use moekit::ops::api;
//! use moekit::{CpuBackend, DType, Device, GemmProblem, HostTensor, RmsNormIo, RmsNormProblem};
//!
//! let dev = CpuBackend::new();
//! let p = RmsNormProblem { rows: 1, hidden: 4, eps: 1e-6, residual: false, dtype: DType::F32 };
//! let x = dev.upload(&HostTensor::full(DType::F32, &[1, 4], 3.0))?;
//! let weight = dev.upload(&HostTensor::from_f32(DType::F32, &[4], &[1.0, 2.0, 3.0, 4.0]))?;
//! let mut y = dev.alloc(DType::F32, &[1, 4])?;
//! api::rms_norm(&dev, &p, RmsNormIo { x: &x, weight: &weight, residual: None, y: &mut y, residual_out: None })?;
//! let y = dev.download(&y)?.to_f32_vec();
//! assert!(y.iter().zip([1.0, 2.0, 3.0, 4.0]).all(|(a, b)| (a - b).abs() < 1e-5));
//!
//! // c [2, 2] = a [2, 3] · b [3, 2]
//! let g = GemmProblem { m: 2, k: 3, n: 2, b_transposed: false, dtype: DType::F32 };
//! let a = dev.upload(&HostTensor::from_f32(DType::F32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
//! let b = dev.upload(&HostTensor::from_f32(DType::F32, &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]))?;
//! let mut c = dev.alloc(DType::F32, &[2, 2])?;
//! api::gemm(&dev, &g, &a, &b, &mut c)?;
//! assert_eq!(dev.download(&c)?.to_f32_vec(), vec![4.0, 5.0, 10.0, 11.0]);
//! # Ok::<(), moekit::Error>(())
//! ```
