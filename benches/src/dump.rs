//! `--dump DIR`: one safetensors file per op, shape and dtype with the op's inputs and the
//! outputs of the checked run, so outside tools can check moekit's results.
//!
//! The file is `DIR/<op>-<shape>-<dtype>.safetensors` (characters of the shape name other
//! than letters, digits, `.`, `_` and `-` become `_`, so `custom:T=8,...` stays one file
//! name). Tensors are named `in.<arg>` and `out.<arg>` after the op's argument names in
//! `moekit_ops` (`in.x`, `in.w_up`, `out.ids`, ...; see [`crate::Workload::input_names`] and
//! [`crate::Workload::output_checks`]). The header metadata holds `op`, `shape`, `dims`
//! (JSON list), `dtype`, `backend` and `seed`.

use crate::workload::{Op, Workload};
use moekit_ops::{DType, HostTensor, TensorMeta};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A dump that could not be written.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DumpError {
    /// Creating the folder or writing the file failed.
    #[error("--dump {path}: {msg}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// The system's message.
        msg: String,
    },
    /// safetensors refused a tensor or the file (a bug: names and sizes come from the op).
    #[error("--dump {path}: safetensors: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// safetensors' message.
        msg: String,
    },
}

/// What a dump file says about its case, besides the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpInfo<'a> {
    /// Shape name.
    pub shape: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Seed of the inputs.
    pub seed: u64,
}

/// The safetensors dtype of a moekit dtype.
pub fn st_dtype(dt: DType) -> Dtype {
    match dt {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
    }
}

/// `dir/<op>-<shape>-<dtype>.safetensors`, the shape name made safe for a file name.
pub fn file_path(dir: &Path, op: Op, shape: &str, dtype: DType) -> PathBuf {
    let safe: String = shape
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    dir.join(format!("{}-{safe}-{}.safetensors", op.name(), dtype.name()))
}

/// Write `w`'s inputs and `outputs` (the checked run's, in output order) to
/// [`file_path`]`(dir, ...)`, creating `dir` when missing. Returns the file written.
///
/// # Errors
/// [`DumpError::Io`] when the folder or file cannot be written, [`DumpError::Format`] when
/// an output count or size does not match the workload.
pub fn write<W: Workload>(
    dir: &Path,
    w: &W,
    dtype: DType,
    outputs: &[HostTensor],
    info: &DumpInfo<'_>,
) -> Result<PathBuf, DumpError> {
    let path = file_path(dir, w.op(), info.shape, dtype);
    let format = |msg: String| DumpError::Format { path: path.clone(), msg };
    let out_names: Vec<&str> = w.output_checks().iter().map(|c| c.0).collect();
    let (in_names, inputs) = (w.input_names(), w.inputs());
    if in_names.len() != inputs.len() || out_names.len() != outputs.len() {
        return Err(format(format!(
            "{} input names for {} inputs, {} output names for {} outputs",
            in_names.len(),
            inputs.len(),
            out_names.len(),
            outputs.len()
        )));
    }
    let named = in_names
        .iter()
        .map(|n| format!("in.{n}"))
        .zip(inputs)
        .chain(out_names.iter().map(|n| format!("out.{n}")).zip(outputs));
    let views = named
        .map(|(name, t)| {
            TensorView::new(st_dtype(t.dtype()), t.shape().to_vec(), t.as_bytes())
                .map(|v| (name.clone(), v))
                .map_err(|e| format(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dims = serde_json::to_string(&w.dims()).unwrap_or_default();
    let meta: HashMap<String, String> = [
        ("op", w.op().name().to_string()),
        ("shape", info.shape.to_string()),
        ("dims", dims),
        ("dtype", dtype.name().to_string()),
        ("backend", info.backend.to_string()),
        ("seed", info.seed.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    std::fs::create_dir_all(dir).map_err(|e| DumpError::Io { path: dir.to_path_buf(), msg: e.to_string() })?;
    safetensors::serialize_to_file(views, &Some(meta), &path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(io) => DumpError::Io { path: path.clone(), msg: io.to_string() },
        other => format(other.to_string()),
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_custom_shapes_in_one_component() {
        let p = file_path(Path::new("d"), Op::MoeLayer, "custom:T=8,H=16", DType::BF16);
        assert_eq!(p, Path::new("d").join("moe_layer-custom_T_8_H_16-bf16.safetensors"));
    }
}
