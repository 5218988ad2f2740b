import torch,time
from transformers import LlamaConfig as C,LlamaForCausalLM as L
torch.set_default_device('cuda');torch.set_default_dtype(torch.bfloat16);torch.manual_seed(0)
m=L(C(hidden_size=5120,intermediate_size=13824,num_hidden_layers=40,num_attention_heads=40,num_key_value_heads=40,vocab_size=32000)).eval()
print('params',sum(p.numel() for p in m.parameters())/1e9,'B',torch.cuda.max_memory_allocated()/2**30,'GiB')
def t(f,n=10):
  f();torch.cuda.synchronize();s=time.perf_counter()
  for _ in range(n):f()
  torch.cuda.synchronize();return (time.perf_counter()-s)/n
out=[]
def pool(mod,a):
  x=a[0].float();out.append(torch.stack([x.mean(1),x.amax(1),x[:,-1]],1).half())
def tok(mod,a):out.append(a[0].half().to('cpu',non_blocking=False))
for B,T in((32,12),(128,12),(64,24)):
  ids=torch.randint(0,32000,(B,T))
  with torch.inference_mode():
    bare=t(lambda:m.model(input_ids=ids))
    r={}
    for name,h in(('pooled',pool),('tokens',tok)):
      hs=[l.mlp.down_proj.register_forward_pre_hook(h) for l in m.model.layers]
      def f():
        out.clear();m.model(input_ids=ids)
        if name=='pooled':torch.stack(out).cpu()
      r[name]=t(f);[x.remove() for x in hs]
    def gen():
      o=m(input_ids=ids,use_cache=True,logits_to_keep=1);n=o.logits[:,-1].argmax(-1)
      m(input_ids=n[:,None],past_key_values=o.past_key_values,use_cache=True,logits_to_keep=1)
    g=t(gen)
  k=B*T
  print(f'B={B} T={T}: bare {k/bare:,.0f} tok/s  pooled {k/r["pooled"]:,.0f} tok/s  per-token(d2h) {k/r["tokens"]:,.0f} tok/s  eval 2-token greedy {B/g:,.0f} prompts/s')
