//! # Non-finite values and empty cases
//!
//! What every backend (reference, CPU, CUDA, cubecl on CUDA and on wgpu) does with NaN and
//! infinities in its inputs, with rows that have nothing to attend to, and with empty batches.
//! It is the same on every backend, and `moekit-testing`'s `nonfinite_*` properties check it on
//! each of them. Only `route` checks its float inputs. The other float ops check nothing, so
//! the hot path pays nothing: NaN and infinities flow through them as defined below.
//!
//! ## Routing: a typed error
//!
//! - A non-finite **logit** gives
//!   [`Error::NonFinite`](crate::Error::NonFinite) `{ op: "route", what: "logits", index: t·E + e }`.
//!   Every expert counts, masked ones too. With the fused gate (`hidden [T, H]` × `gate [H, E]`)
//!   the check is on the *computed* logit. A NaN or infinity in hidden row `t` spoils every
//!   logit of row `t`, and one in gate column `e` spoils logit `e` of every token. Both are
//!   reported as `"logits"`, never as `"hidden"` or `"gate"`. A logit also counts as
//!   non-finite when the backend's accumulator overflows. The reference forms logits in f64;
//!   the other backends form them in f32, so only they can overflow on huge finite inputs.
//! - A non-finite correction **bias** gives `NonFinite { op: "route", what: "bias", index: e }`.
//!   Again every expert counts, masked ones too.
//! - Host backends (reference, CPU) check the logits first, then the bias. They report the
//!   lowest offending index and write nothing. Device backends (CUDA, cubecl) record the
//!   error and report it at the next `download`, `sync` or `time_ms`
//!   ([`crate::check::BadIndex`]). There the index is *some* offending index, and when both
//!   the logits and the bias are bad either one may be named. After a content error the
//!   outputs (`ids`, `weights`, `counts`, `load`, and anything downstream such as a fused
//!   `moe_layer`'s `out`) are unspecified.
//! - With `T = 0`, nothing is read and nothing is reported on any backend, even a NaN bias.
//!   `counts` and `load` are zeros.
//!
//! ## The other float ops: propagation, unchecked
//!
//! A **NaN** in an input makes exactly the outputs that depend on it NaN. Every other output
//! is what the NaN-free input gives, within the usual tolerance:
//!
//! | op | a NaN in … | makes NaN |
//! | --- | --- | --- |
//! | `gemm`, `grouped_gemm` | row `r` of `x` (`a`) | every element of output row `r`; rows outside every expert stay 0 |
//! | `gemm`, `grouped_gemm` | column `n` of `w[e]` (`b`) | column `n` of expert `e`'s rows (of every row for `gemm`) |
//! | `rms_norm` | element `(r, j)` of `x` or `residual` | all of `y` row `r`, and `residual_out[r, j]` |
//! | `rms_norm` | `weight[j]` | column `j` of `y` |
//! | `swiglu` | `x[r, i]` or `x[r, I + i]` | `y[r, i]` |
//! | `rotary` | `x[t, h, f]` | `out[t, h, f]` and its rotation partner `f ± D/2` |
//! | `embedding` | `table[v, j]` | `out[t, j]` for every token with `ids[t] = v` (rows no id selects are harmless) |
//! | `unpermute_combine` | `y[r, c]` / `weights[t, j]` / `add[t, c]` | `out[t, c]` of every token with a slot reading `r` / all of `out` row `t` / `out[t, c]` |
//! | `attention` | `q` at (token `i`, head `h`) | `o[i, h, :]` and `lse[h, i]` |
//! | `attention` | `k` at key `j`, kv head `g` | `o` and `lse` of every query row (of the heads of group `g`) that can see key `j` |
//! | `attention` | `v` at key `j`, kv head `g` | `o` of every query row (of group `g`) that can see key `j`; `lse` is unaffected |
//!
//! For attention, rows of other sequences and of other kv-head groups are never affected.
//! Rows of the same sequence and group that *cannot* see key `j` are **unspecified**. Flash
//! kernels multiply a masked probability, 0, by `v[j]`, and `0 · NaN` is NaN. K/V rows from
//! `Tk` on (cache capacity) are never read.
//!
//! An **infinity** (±inf) leaves the outputs that depend on it unspecified: they may be
//! infinite, NaN or finite. For example, `rms_norm` gives 0 for the other elements of a row
//! holding an infinity, and softcap bounds an infinite score. Every output that does not
//! depend on it is unaffected, exactly as for NaN.
//!
//! **Attention rows with no finite score.** Validation rejects any mask that leaves a query
//! row without a key ([`Error::EmptyMaskRow`](crate::Error::EmptyMaskRow)). So a row whose
//! visible scores are all `-inf` can only come from non-finite inputs. Such a row gets
//! `o = NaN` and `lse = NaN` on every backend, as does a row with a NaN score. On the cubecl
//! cmma and mma kernels (f16/bf16 on GPUs with matrix instructions), a visible score at or
//! below `-1e30` counts as `-inf`. That only matters when *every* visible score of a row is
//! that low, which needs inputs near `1e15` in magnitude. The portable cubecl kernel and
//! every other backend count any finite score.
//!
//! `update_bias` does not check its bias either: NaN stays NaN.
//!
//! ## Empty cases: defined results
//!
//! | case | result |
//! | --- | --- |
//! | `route` with `T = 0` | nothing in `ids`/`weights`; `counts` and `load` all 0; nothing checked |
//! | an expert no token picks | `counts[e] = 0`, `load[e]` = its score sum (0 when masked) |
//! | `permute` with `T = 0`, an expert with no slot | empty segments; rows past `offsets[E]` are zero with `row_to_token = -1` |
//! | `unpermute_combine` with `T = 0` (`R = 0`) | nothing written |
//! | `grouped_gemm` with `R = 0`, `C = 0`, an empty expert, `gather_tokens = Some(0)` | an empty expert writes nothing; rows outside every expert are 0 |
//! | `attention` with `Tq = 0` or a sequence with `Lq = 0` | nothing written for it |
//! | glue ops with 0 rows or tokens; `gemm` with `M = 0` or `N = 0` / `K = 0` | nothing written / `c = 0` |
//! | `moe_layer` with `T = 0`, or experts without tokens | valid |
