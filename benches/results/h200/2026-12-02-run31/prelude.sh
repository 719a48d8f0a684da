# Sourced by the device call scripts (sessions 11-17): unpack the binaries and the kernel cache,
# set the cache variables, and bundle $OUT/r and the cache on exit (device outputs <= 8 files).
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
R=$OUT/r; mkdir -p $R
bundle() { (cd $OUT && tar czf run.tar.gz r); (cd $cache && tar cJf $OUT/cache.tar.xz .); }
trap bundle EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > $R/gpu.txt
t0=$(date +%s); el() { echo "t=$(( $(date +%s) - t0 ))s $*" | tee -a $R/correct.log; }
# ncu_sum CSV: one line of the mean of every metric of an `ncu --csv` file (session 23).
ncu_sum() {
python3 - "$1" <<'P'
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
if not rows: print(sys.argv[1].split('/')[-1], 'no rows'); sys.exit()
h=rows[0]; d=collections.defaultdict(list)
for r in rows[1:]:
    try: d[r[h.index('Metric Name')]].append(float(r[h.index('Metric Value')].replace(',','')))
    except Exception: pass
print(sys.argv[1].split('/')[-1], ' '.join(f"{k.split('.')[0]}={sum(v)/len(v):.4g}" for k,v in d.items()))
P
}
