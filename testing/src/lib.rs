//! moekit-testing
