# Session 15 (issue 15): at initialisation, the preset at seeds 0-5 (as bench/quality.py seeds it): the norm of
# what the state reads add through the 4th layer's output projection over what its attention output adds, on 2 rows
# of linux_c; the first loss and gradient norms. CPU. Run from the repository root.
import sys, torch, random
sys.path.insert(0,'bench'); sys.path.insert(0,'.')
import quality
import block_recurrent_transformer_pytorch as brt
torch.set_num_threads(2)
args = quality.parse_args(['--preset','long-documents','--tokens','1e6','--device','cpu'])
name, train, _ = quality.load_corpus(argparse_ns := __import__('argparse').Namespace(corpus='linux_c', corpora=None, tiny=False))
g = torch.Generator().manual_seed(123)
starts = torch.randint(0, len(train) - 2050, (2,), generator=g)
x = torch.stack([train[s:s + 2049].long() for s in starts])
for seed in [0,1,2,3,4,5]:
    torch.manual_seed(seed); random.seed(seed)
    cfg = quality.ours_config(args)
    m = brt.BlockRecurrentTransformer(**cfg)
    attn = m.layers[3][0]
    inner = cfg['heads'] * cfg['dim_head']
    acts = {}
    def hook(mod, inp, out):
        a = inp[0]
        w = mod.weight
        acts['attn'] = (a[..., :inner] @ w[:, :inner].T).norm().item()
        acts['read'] = (a[..., inner:] @ w[:, inner:].T).norm().item()
    attn.to_out.register_forward_hook(hook)
    loss, _, _ = m(x, return_loss=True)
    loss.backward()
    gn = torch.norm(torch.stack([p.grad.norm() for p in m.parameters() if p.grad is not None])).item()
    gs = torch.norm(torch.stack([p.grad.norm() for p in m.states.parameters()])).item()
    gate = m.states[0].gate.bias.sigmoid()
    print(seed, f"loss {loss.item():.4f} read/attn {acts['read']/acts['attn']:.3f} grad {gn:.3f} state-grad {gs:.3f} gate {gate.mean():.3f}", flush=True)
