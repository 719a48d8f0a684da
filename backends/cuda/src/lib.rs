//! moekit-cuda
