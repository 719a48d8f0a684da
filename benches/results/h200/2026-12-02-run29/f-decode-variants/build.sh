set -e
cd /work/main
build() { cargo build --release -p moekit-bench --features moekit-bench/cuda 2>&1 | tail -1; cp target/release/moekit-bench /tmp/var/bin-$1; strip /tmp/var/bin-$1; }
restore() { cp /tmp/dec.orig.cu backends/cuda/kernels/attention_decode.cu; cp /tmp/dec.orig.rs backends/cuda/src/ops/attention_decode.rs; }
# prefetch hints
for h in 128 256; do
  restore
  python3 - $h <<'P'
import sys
h=sys.argv[1]
p='backends/cuda/kernels/attention_decode.cu'
s=open(p).read()
helper='''// cp.async of 16 bytes with an L2 prefetch hint (experiment).
__device__ __forceinline__ void dec2_cp16(void* dst, const void* src, bool pred) {
    asm volatile("cp.async.cg.shared.global.L2::%sB [%%0], [%%1], 16, %%2;" ::"r"(att_smem_addr(dst)), "l"(src),
                 "r"(pred ? 16 : 0));
}
''' % h
old='''template <typename T, int D>
__device__ __forceinline__ void dec2_load('''
assert old in s
s=s.replace(old, helper+old,1)
s=s.replace("att_cp16(stage + r * LD + ch * 8, ok ? k + at : k, ok);","dec2_cp16(stage + r * LD + ch * 8, ok ? k + at : k, ok);")
s=s.replace("att_cp16(stage + (DEC2_KB + r) * LD + ch * 8, ok ? v + at : v, ok);","dec2_cp16(stage + (DEC2_KB + r) * LD + ch * 8, ok ? v + at : v, ok);")
assert s.count("dec2_cp16(")==3
open(p,'w').write(s)
P
  build pf$h
done
for ns in 3 6; do
  restore
  sed -i "s/^#define DEC2_STAGES 4$/#define DEC2_STAGES $ns/" backends/cuda/kernels/attention_decode.cu
  sed -i "s/^const V2_STAGES: usize = 4;/const V2_STAGES: usize = $ns;/" backends/cuda/src/ops/attention_decode.rs
  grep -c "DEC2_STAGES $ns" backends/cuda/kernels/attention_decode.cu
  build s$ns
done
restore
echo ALLDONE
