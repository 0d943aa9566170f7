# Session 15 (issue 15): for every bench/quality.py 100M-token record, the first logged step where the training
# loss is under 1.2 bits/byte and the held-out result. Run from the repository root: python escape_steps.py
import json, glob, collections
rows=[]
for f in sorted(glob.glob('bench/results/2026-11-30_2xh200_*/q100m*_all.jsonl')):
    runs=collections.defaultdict(dict)
    for l in open(f):
        r=json.loads(l); impl=r.get('impl')
        if r.get('kind')=='config': runs[impl]['cfg']=r
        if r.get('kind')=='train': runs[impl].setdefault('curve',[]).append((r['step'],r['bpb']))
        if r.get('kind')=='result': runs[impl]['res']=r
    for impl,d in runs.items():
        if 'res' not in d or 'curve' not in d or d['res'].get('eval') is None: continue
        a=d['cfg'].get('args',{})
        if a.get('preset')!='long-documents' or a.get('seq')!=2048 and impl.endswith('xl')==False: pass
        esc=next((s for s,b in d['curve'] if b<1.2),None)
        at800=dict(d['curve']).get(800)
        rows.append((f.split('/')[2][-7:]+'/'+f.split('/')[-1][:-10], impl, a.get('seed'), a.get('set'), a.get('seq'), a.get('mem_dropout'), round(d['res']['tokens']/1e6), esc, at800, d['res']['eval']['bpb']))
for r in rows: print(*r, sep=' | ')
