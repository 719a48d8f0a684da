//! What `CubeBackend` does on this machine: without its feature, or without a device, each
//! constructor answers a typed error (never a panic); with one, memory round-trips, an op runs,
//! and bad index data comes back as a typed error at the next download.

use moekit_cubecl::{CubeBackend, CudaRuntime, WgpuRuntime};
use moekit_ops::{api, Backend, DType, EmbeddingProblem, Error, HostTensor, SwigluProblem, TensorMeta};
use std::io::Write;

/// The error is `NotCompiled` exactly when the feature is off, else `NoDevice`.
fn check_unavailable(e: &Error, name: &str, compiled: bool) {
    if compiled {
        assert!(matches!(e, Error::NoDevice { backend, .. } if *backend == name), "{e:?}");
    } else {
        assert!(matches!(e, Error::NotCompiled { backend, .. } if *backend == name), "{e:?}");
    }
}

/// Memory round trips, an op, and a deferred content error, on a backend that could be built.
fn exercise<B: Backend>(b: &B) {
    for &dtype in b.float_dtypes().iter().chain(&[DType::I32]) {
        for shape in [vec![3, 5], vec![0, 4]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let host = HostTensor::from_f32(dtype, &shape, &values);
            let buf = b.upload(&host).unwrap();
            assert_eq!((buf.dtype(), buf.shape()), (dtype, &shape[..]));
            assert_eq!(b.download(&buf).unwrap(), host, "{dtype} {shape:?}");
            assert_eq!(b.download(&b.alloc(dtype, &shape).unwrap()).unwrap(), HostTensor::zeros(dtype, &shape));
        }
    }
    b.sync().unwrap();
    // silu(1) · 2 in every element.
    let p = SwigluProblem { rows: 2, inter: 3, dtype: DType::F32 };
    let x = b
        .upload(&HostTensor::from_f32(DType::F32, &[2, 6], &[1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2.]))
        .unwrap();
    let mut y = b.alloc(DType::F32, &[2, 3]).unwrap();
    api::swiglu(b, &p, &x, &mut y).unwrap();
    let want = 2.0 / (1.0 + (-1.0f32).exp());
    for v in b.download(&y).unwrap().to_f32_vec() {
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
    }
    // An id past the vocabulary: the op is queued, the download reports it, then it is cleared.
    let p = EmbeddingProblem { tokens: 2, vocab: 3, hidden: 4, dtype: DType::F32 };
    let table = b.alloc(DType::F32, &[3, 4]).unwrap();
    let ids = b.upload(&HostTensor::from_i32(&[2], &[1, 7])).unwrap();
    let mut out = b.alloc(DType::F32, &[2, 4]).unwrap();
    api::embedding(b, &p, &table, &ids, &mut out).unwrap();
    let e = b.download(&out).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { op: "embedding", value: 7, .. }), "{e:?}");
    b.sync().unwrap();
}

fn skip(test: &str, e: &Error) {
    // NOTE: written to stderr directly, past the harness's output capture, so a skipped
    // device test says so in every run instead of passing silently.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e}");
}

/// The runtime's capabilities are consistent with the backend, and printed for the log.
fn report<B: Backend>(b: &B, caps: &moekit_cubecl::Capabilities) {
    let _ = writeln!(std::io::stderr(), "{}: {caps}", b.name());
    assert_eq!(caps.float_dtypes, b.float_dtypes(), "{caps}");
    assert!(caps.plane_size.0 <= caps.plane_size.1 && caps.max_shared_bytes > 0, "{caps}");
    assert!(caps.float_dtypes.contains(&DType::F32), "{caps}");
}

#[test]
fn wgpu_backend_or_typed_error() {
    match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => {
            report(&b, &b.capabilities());
            exercise(&b)
        }
        Err(e) => {
            check_unavailable(&e, "cubecl-wgpu", cfg!(feature = "cubecl-wgpu"));
            skip("wgpu_backend_or_typed_error (memory and ops)", &e);
        }
    }
}

#[test]
fn cuda_backend_or_typed_error() {
    match CubeBackend::<CudaRuntime>::cuda(0) {
        Ok(b) => {
            report(&b, &b.capabilities());
            exercise(&b)
        }
        Err(e) => {
            check_unavailable(&e, "cubecl-cuda", cfg!(feature = "cubecl-cuda"));
            skip("cuda_backend_or_typed_error (memory and ops)", &e);
        }
    }
}

/// A program that owns its wgpu device and queue hands them to the backend: moekit's ops run
/// on that device, and the caller's device keeps working beside it.
#[cfg(feature = "cubecl-wgpu")]
#[test]
fn wgpu_backend_on_a_callers_device() {
    use moekit_cubecl::wgpu;
    use pollster::block_on;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = match block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())) {
        Ok(a) => a,
        Err(e) => {
            let e = Error::NoDevice { backend: "cubecl-wgpu", reason: e.to_string() };
            return skip("wgpu_backend_on_a_callers_device", &e);
        }
    };
    let desc = wgpu::DeviceDescriptor {
        label: Some("the caller's device"),
        required_features: adapter.features(),
        required_limits: adapter.limits(),
        // SAFETY: cubecl submits SPIR-V through wgpu's passthrough, an experimental feature;
        // the shaders it passes are its own compiler's output.
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        ..Default::default()
    };
    let (device, queue) = block_on(adapter.request_device(&desc)).expect("the adapter opens a device");
    let backend = adapter.get_info().backend;
    let setup = moekit_cubecl::WgpuSetup { instance, adapter, device: device.clone(), queue: queue.clone(), backend };
    let b = CubeBackend::<WgpuRuntime>::from_wgpu_setup(setup).expect("the backend starts on the caller's device");
    exercise(&b);
    // The caller's device and queue still serve the caller: a buffer written and read back.
    let data: Vec<u8> = (0..64u8).collect();
    let buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&buf, 0, &data);
    queue.submit([]);
    let slice = buf.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| r.expect("the buffer maps"));
    device.poll(wgpu::PollType::wait_indefinitely()).expect("the device finishes");
    assert_eq!(&slice.get_mapped_range()[..], &data[..]);
}
