//! The property suite on the reference backend: the invariants (meaningful on the oracle
//! itself), the invalid-input property, and reference-vs-reference comparisons (cheap, and
//! they check the harness).

moekit_testing::backend_suite!(reference, moekit_reference::ReferenceBackend, [f32, f16, bf16]);
