# Session 15 (issue 15): what the rows of bench/quality.py's reader (16 x 2048, linux_c) train on in steps 0-1,600,
# per 200 steps and seed: zlib bits/byte of the rows' bytes (every 10th step) / share of real bytes (not padding) /
# share of rows reading one of the three largest files. CPU. Run from the repository root: python cpu_early_data.py 0,1,2,3,4
import sys, zlib, math
sys.path.insert(0,'bench'); sys.path.insert(0,'.')
import argparse, corpora
from quality import load_corpus
from training.documents import DocumentStreams
import numpy as np
args = argparse.Namespace(corpus='linux_c', corpora=None, tiny=False)
name, train, _ = load_corpus(args)
order = np.argsort(-np.array([0]))
seeds = [int(s) for s in sys.argv[1].split(',')]
rows, seg, window, until = 16, 2048, 200, 1600
for seed in seeds:
    st = DocumentStreams(train, corpora.SEPARATOR, rows, seg, shuffle=True, seed=seed)
    top = set(np.argsort(-st.lengths)[:3].tolist())
    out = []
    for w in range(until // window):
        zbits, real, topn, n = 0.0, 0, 0, 0
        for s in range(window):
            pieces = list(st.piece)
            b = st.next(1)
            x = b.inputs.reshape(rows, -1)[:, :seg].numpy().astype(np.uint8)
            lab = b.labels.reshape(rows, -1).numpy()
            for r in range(rows):
                valid = lab[r] != -100
                k = int(valid.sum()); real += k
                if k: 
                    if s % 10 == 0:
                        zbits += 8 * len(zlib.compress(x[r][valid].tobytes(), 6)) / k; n += 1
            topn += sum(1 for p in st.piece if p in top)
        out.append(f"{zbits / max(n,1):.2f}/{real / (window*rows*seg):.2f}/{topn/(window*rows):.2f}")
    print(seed, ' '.join(out), flush=True)
