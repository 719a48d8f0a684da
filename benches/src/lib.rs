//! moekit-bench
