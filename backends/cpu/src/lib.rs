//! moekit-cpu
