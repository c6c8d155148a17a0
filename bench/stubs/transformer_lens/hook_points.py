"""Working minimal HookPoint and HookedRootModule: sae_lens's SAEs subclass and call them on every forward pass.

As in transformer_lens, a HookPoint is an identity nn.Module (forward returns x) and HookedRootModule.setup()
names the submodules and builds mod_dict / hook_dict. transformer_lens's hook-management API (run_with_hooks,
run_with_cache, add_hook, ...) is left out: the benchmark registers no hooks.
"""
from torch import nn


class HookPoint(nn.Module):
    def __init__(self):
        super().__init__()
        self.fwd_hooks, self.bwd_hooks, self.ctx, self.name = [], [], {}, None

    def forward(self, x):
        return x


class HookedRootModule(nn.Module):
    def __init__(self, *args):
        super().__init__()
        self.is_caching, self.context_level = False, 0

    def setup(self):
        self.mod_dict, self.hook_dict = {}, {}
        for name, module in self.named_modules():
            if name == "": continue
            module.name = name
            self.mod_dict[name] = module
            if isinstance(module, HookPoint): self.hook_dict[name] = module

    def hook_points(self):
        return self.hook_dict.values()
