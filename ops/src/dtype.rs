//! Element types moekit moves between host and device.

use std::fmt;

/// Element type of a tensor or buffer.
///
/// Float ops accept [`DType::F32`], [`DType::F16`] and [`DType::BF16`] and always compute in
/// f32 (or better); index data (expert ids, offsets, positions) is [`DType::I32`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    BF16,
    /// Signed 32-bit integer (indices, counts, offsets).
    I32,
}

impl DType {
    /// The float dtypes every float op accepts.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// `true` for the float dtypes.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32)
    }

    /// Short lowercase name (`f32`, `f16`, `bf16`, `i32`), as used on command lines.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
        }
    }

    /// Unit roundoff (half an ulp at 1.0) of the dtype; 0 for integers.
    pub fn epsilon(self) -> f64 {
        match self {
            DType::F32 => f32::EPSILON as f64 / 2.0,
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
            DType::I32 => 0.0,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "i32" | "int32" => Ok(DType::I32),
            other => Err(format!("unknown dtype `{other}` (expected f32, f16, bf16 or i32)")),
        }
    }
}
