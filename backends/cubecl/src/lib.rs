//! moekit-cubecl
