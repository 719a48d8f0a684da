//! The decoding loops: each step's choice is what one full forward of the whole sequence so
//! far chooses (greedy), sampling is seeded, and bad options are typed errors.

mod common;

use common::tiny;
use moekit_cpu::CpuBackend;
use moekit_model::{
    generate_audio, generate_image, generate_text, next_scale_inputs, Audio, Elastic, Model, Sampler, Segment,
};
use moekit_ops::DType;

#[test]
fn greedy_text_is_the_argmax_of_the_full_forward_at_every_step() {
    let (cfg, w) = tiny();
    let b = CpuBackend::new();
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic::default();
    let prompt = vec![3, 14, 15, 92, 65];
    let mut cache = m.cache(32, &e).unwrap();
    let got = generate_text(&m, &mut cache, &[Segment::Text(prompt.clone())], 6, &mut Sampler::greedy(), &e).unwrap();
    assert_eq!(got.len(), 6);
    let mut seq = prompt;
    for &tok in &got {
        let f = m.forward_text(&seq, &e).unwrap();
        let v = cfg.text_vocab;
        let last = &f.text_logits.to_f32_vec()[(seq.len() - 1) * v..];
        let best = last.iter().enumerate().fold(0, |b, (i, &x)| if x > last[b] { i } else { b });
        assert_eq!(tok as usize, best);
        seq.push(tok);
    }
}

#[test]
fn sampling_is_seeded_and_a_tiny_nucleus_is_greedy() {
    let (cfg, w) = tiny();
    let b = CpuBackend::new();
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic::default();
    let run = |s: &mut Sampler| {
        let mut cache = m.cache(32, &e).unwrap();
        generate_text(&m, &mut cache, &[Segment::Text(vec![1, 2, 3])], 8, s, &e).unwrap()
    };
    let a = run(&mut Sampler::new(1.5, 0.9, 7).unwrap());
    assert_eq!(a, run(&mut Sampler::new(1.5, 0.9, 7).unwrap()));
    assert_eq!(run(&mut Sampler::new(1.0, 1e-9, 3).unwrap()), run(&mut Sampler::greedy()));
    assert!(Sampler::new(-1.0, 1.0, 0).is_err());
    assert!(Sampler::new(1.0, 0.0, 0).is_err());
    let mut cache = m.cache(32, &e).unwrap();
    let err =
        generate_text(&m, &mut cache, &[Segment::Audio(Audio { codes: vec![1, 2] })], 1, &mut Sampler::greedy(), &e);
    assert!(err.unwrap_err().to_string().contains("ends with a text token"));
}

#[test]
fn an_image_is_generated_one_scale_at_a_time_as_one_forward_would() {
    let (cfg, w) = tiny();
    let b = CpuBackend::new();
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic::default();
    let scales = [(1, 1), (2, 2), (3, 3)];
    let mut cache = m.cache(64, &e).unwrap();
    m.step(&mut cache, &[Segment::Text(vec![5, 6, 7])], &e).unwrap();
    let img = generate_image(&m, &mut cache, &scales, &mut Sampler::greedy(), &e).unwrap();
    let bits = cfg.visual_code_bits;
    assert_eq!(img.bits.len(), 14 * bits);
    // The inputs the loop fed: zeros, then each scale's codes upsampled to the next.
    let whole = next_scale_inputs(&img, bits);
    assert_eq!(&whole.bits[..bits], &vec![0u8; bits][..]);
    assert_eq!(&whole.bits[bits..2 * bits], &img.bits[..bits]);
    let f = m.forward(&[Segment::Text(vec![5, 6, 7]), Segment::Visual(whole)], &e).unwrap();
    let greedy: Vec<u8> = f.visual_logits.to_f32_vec().iter().map(|&x| u8::from(x > 0.0)).collect();
    assert_eq!(greedy, img.bits);
}

#[test]
fn audio_is_generated_frame_by_frame_as_one_forward_would() {
    let (cfg, w) = tiny();
    let b = CpuBackend::new();
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic { top_k: Some(1), ..Elastic::default() };
    let mut cache = m.cache(32, &e).unwrap();
    m.step(&mut cache, &[Segment::Text(vec![9, 8])], &e).unwrap();
    let a = generate_audio(&m, &mut cache, 4, &mut Sampler::greedy(), &e).unwrap();
    let levels = cfg.audio_levels;
    assert_eq!(a.codes.len(), 4 * levels);
    let mut fed = vec![0i32; levels];
    fed.extend(&a.codes[..3 * levels]);
    let f = m.forward(&[Segment::Text(vec![9, 8]), Segment::Audio(Audio { codes: fed })], &e).unwrap();
    assert_eq!(f.audio_codes, a.codes);
}

#[test]
fn next_scale_inputs_shift_each_frame_by_one_scale() {
    let (cfg, _) = tiny();
    let bits = cfg.visual_code_bits;
    let v = common::visual(&cfg, 2, &[(1, 1), (2, 2)], 3);
    let x = next_scale_inputs(&v, bits);
    assert_eq!(x.bits.len(), v.bits.len());
    for f in 0..2 {
        let (at, code0) = (f * 5 * bits, &v.bits[f * 5 * bits..(f * 5 + 1) * bits]);
        assert!(x.bits[at..at + bits].iter().all(|&b| b == 0), "frame {f}: the first scale's input is zeros");
        for cell in 1..5 {
            assert_eq!(&x.bits[at + cell * bits..at + (cell + 1) * bits], code0, "frame {f}, cell {cell}");
        }
    }
}

#[test]
fn sampled_audio_levels_condition_the_next_level_on_the_drawn_code() {
    let (cfg, w) = tiny();
    let b = CpuBackend::new();
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic::default();
    let run = |seed| {
        let mut cache = m.cache(16, &e).unwrap();
        m.step(&mut cache, &[Segment::Text(vec![9, 8])], &e).unwrap();
        generate_audio(&m, &mut cache, 3, &mut Sampler::new(2.0, 1.0, seed).unwrap(), &e).unwrap()
    };
    assert_eq!(run(5), run(5));
    // A forced level-0 code conditions level 1: its logits move with the code.
    let seg = [Segment::Text(vec![9, 8]), Segment::Audio(Audio { codes: vec![1, 2] })];
    let level1 = |code: usize| {
        let mut cache = m.cache(16, &e).unwrap();
        let f = m
            .step_sampled(&mut cache, &seg, &e, moekit_model::Heads::All, &mut |l, r| {
                if l == 0 {
                    code
                } else {
                    r.len() - 1
                }
            })
            .unwrap();
        assert_eq!(&f.audio_codes, &[code as i32, cfg.audio_codebook as i32 - 1]);
        f.audio_logits[1].to_f32_vec()
    };
    assert_ne!(level1(3), level1(4));
}
