//! moekit-reference
