//! moekit-model
