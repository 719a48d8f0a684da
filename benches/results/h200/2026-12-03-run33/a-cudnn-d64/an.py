import csv, gzip, sys, collections, re
def load(n):
    rows=list(csv.reader(gzip.open(f'r/{n}-sass.csv.gz','rt')))
    h=rows[1]; out=[]
    for r in rows[2:]:
        if len(r)<len(h)-2: continue
        d=dict(zip(h,r)); out.append(d)
    return h,out
for n in sys.argv[1:]:
    h,rs=load(n)
    op=collections.Counter(); samp=collections.Counter(); tot=0; stall=collections.Counter()
    for d in rs:
        ins=d['Source'].strip()
        m=re.match(r'(@!?U?P\w+\s+)?([A-Z0-9_]+)(\.[A-Z0-9_\.]+)?',ins)
        if not m: continue
        o=m.group(2)
        try: ex=int(d['Instructions Executed'] or 0)
        except: ex=0
        op[o]+=ex; tot+=ex
        s=int(d['Warp Stall Sampling (All Samples)'] or 0); samp[o]+=s
        for k in h:
            if k.startswith('stall_') and '(' not in k:
                try: stall[k]+=int(d[k] or 0)
                except: pass
    st=sum(samp.values())
    print(f'== {n}: {tot/1e6:.1f}M warp instrs, {len(rs)} SASS lines, {st} samples')
    for o,c in op.most_common(28): print(f'  {o:10s} {c/1e6:8.2f}M {100*c/tot:5.1f}%  samples {100*samp[o]/st:5.1f}%')
    print('  stalls:', ', '.join(f'{k[6:]}={100*v/st:.1f}%' for k,v in stall.most_common(10)))
