"""Reference outputs of the authors' code of DB-MTL, MoCo, FairGrad,
ExcessMTL, MoDo, SDMGrad and Nash-MTL, as test fixtures.

None of these is in LibMTL 1.1.5, the only LibMTL release the package
registry serves; later LibMTL code (on GitHub only) and the papers'
repositories hold them. The minimal authors' code of each is copied below
verbatim (between `# fmt: off` and `# fmt: on`), with its repository, path,
commit and licence. Run in a separate environment with PyTorch, NumPy < 2
(SDMGrad's projection calls np.alltrue), SciPy, cvxpy with ECOS (Nash-MTL)
and LibMTL 1.1.5 (whose AbsWeighting, the same as on LibMTL's GitHub, the
LibMTL-style classes subclass); never by the tests, which must not import
torch:

  python3 -m venv .refenvD
  .refenvD/bin/pip install torch==2.13.0+cpu 'numpy<2' scipy cvxpy ecos
  .refenvD/bin/pip download LibMTL==1.1.5 --no-deps -d .refenvD
  .refenvD/bin/pip install --no-deps .refenvD/LibMTL-1.1.5-*.whl
  .refenvD/bin/python experiments/references/make_author_fixtures.py

(torch 2.13.0+cpu, numpy 1.26.4, scipy 1.17.1, cvxpy 1.7.5, ecos 2.0.14
wrote the committed fixtures.) It writes tests/core/weighting/fixtures/
<method>_authors.json, read by tests/core/weighting/test_author_fixtures.py.

As make_libmtl_gradient_fixtures.py, each method runs on one shared
parameter vector theta (theta = 0) whose per-task losses are L_t = <g_t,
theta> + l_t, so that the gradients are exactly g_t and the losses l_t; the
method's own gradient code computes the g_t, and the fixture records what it
returns and the gradient it leaves on theta (or, for the functions called
directly, the vector they return). Float64 (torch's default dtype set to
float64). Every gradient and loss is a float32 number (rounded so before the
authors' code sees it, stored with 9 significant digits: read as float32 it
is exact), so mtl's float32 step sees exactly what the authors' code saw.

Stateful methods run 20 steps, a new draw of the same kind of gradient set
at every step (three draws around it, the step's three samples, for MoDo
and SDMGrad). None of the authors' code here draws random numbers.

- DB-MTL: LibMTL's DB_MTL (LibMTL's authors wrote DB-MTL), its default
  beta = 0.9, beta_sigma = 0, and 0.5 / 0.5.
- MoCo: LibMTL's MoCo ("based on the author's sharing code": loss-scaled
  unit gradients and a softmax, mtl's variant='code'), its defaults; and
  the MoCo authors' own repository's Tracking (Algorithm 1 with the
  projection onto the simplex and the step 2 delta Y^T Y lambda: mtl's
  variant='paper' with gamma = 2 delta), its defaults beta = delta = 0.1,
  sigma2 = sigma3 = 0.5.
- FairGrad: the authors' `FairGrad.fairgrad` (SciPy least_squares from 1/T,
  stateless) on single gradient sets, alpha = 1 and (4 to 6 tasks) 0.5, 2
  and 5, and over 20
  steps at alpha = 1 (mtl warm-starts from its previous solution).
- ExcessMTL: the authors' ExcessMTL class, step sizes 1e-2 (default) and 1
  (zero_task: the task's gradient is zero from step 2 on); and three steps
  with a task whose gradient is zero at step 1 (`zero_at_step_1`).
- MoDo: LibMTL's MoDo (three samples; d on the third). The MoDo authors'
  repository (heshandevaka/Trade-Off-MOL, LibMTL/LibMTL/weighting/MoDo.py,
  commit a1799ed40db6ee01596126581de03a5351103085, "Work in progress")
  cannot run as written: its backward stacks the two samples' losses
  (`torch.stack(losses)`) and backpropagates task by task, the first
  sample's last backward without retain_graph, which frees the second
  sample's graph too ("Trying to backward through the graph a second
  time"); it steps on the two samples' sum, not a third.
- SDMGrad: LibMTL's SDMGrad (mtl follows it: lr 5, momentum 0.5, the Gram
  divided by (mean sqrt(max(diag, 0)))^2 + 1e-8); and the authors' own
  `SDMGrad.sdmgrad` of OptMN-Lab/sdmgrad (lr 10, momentum 0.5, the Gram
  divided by (mean sqrt(diag + 1e-4))^2), called on three distinct samples
  (the repository's get_weighted_loss builds its three gradient tensors as
  `[torch.Tensor(...)] * 3`, one tensor three times, so there all three
  samples are the last one's). At lr 5 and 10 the inner iteration is
  expansive on some sets: each step also records the authors' own
  sensitivity (`ulp_spread`), the largest relative change of its d over
  three runs with every sample moved by up to one float32 ulp.
- Nash-MTL: the authors' NashMTL (cvxpy, ECOS) with max_norm = 0 (its
  clipping of the combined gradient to norm 1, a trainer's choice, off), on
  single gradient sets (cold start) and over 20 steps (warm starts,
  update_weights_every 1, and 3 on one trajectory).
"""

# The authors' code below is copied verbatim (names, style and all).
# ruff: noqa: B007, E501, E712, E722, UP006, UP007, UP008, UP031, UP035, W291, W293

import contextlib
import importlib.util
import io
import json
import pathlib
import sys
import types
from abc import abstractmethod
from typing import Dict, List, Tuple, Union

import cvxpy as cp
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares

OUT = pathlib.Path(__file__).resolve().parents[2] / 'tests/core/weighting'
OUT = OUT / 'fixtures'
COMMAND = 'python experiments/references/make_author_fixtures.py'
STEPS = 20
P = 8


def import_abs_weighting():
  """LibMTL 1.1.5's AbsWeighting without LibMTL/__init__.py, which imports
  its models and so torchvision."""
  root = pathlib.Path(importlib.util.find_spec('LibMTL').origin).parent
  for name, path in (
    ('LibMTL', root),
    ('LibMTL.weighting', root / 'weighting'),
  ):
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
  from LibMTL.weighting.abstract_weighting import (  # noqa: PLC0415
    AbsWeighting,
  )

  return AbsWeighting


AbsWeighting = import_abs_weighting()


# ---- the authors' code (verbatim) -------------------------------------------


# median-research-group/LibMTL, LibMTL/weighting/DB_MTL.py, commit
# 7b0f56a7ee61f9fc17738dd221bb017d04999832. MIT licence (LibMTL).
# fmt: off
class DB_MTL(AbsWeighting):

    def __init__(self):
        super(DB_MTL, self).__init__()

    def init_param(self):
        self.step = 0
        self._compute_grad_dim()
        self.grad_buffer = torch.zeros(self.task_num, self.grad_dim).to(self.device)
        
    def backward(self, losses, **kwargs):
        self.step += 1
        beta = kwargs['DB_beta']
        beta_sigma = kwargs['DB_beta_sigma']

        batch_weight = np.ones(len(losses))
        if self.rep_grad:
            raise ValueError('No support method DB_MTL with representation gradients (rep_grad=True)')
        else:
            self._compute_grad_dim()
            batch_grads = self._compute_grad(torch.log(losses+1e-8), mode='backward') # [task_num, grad_dim]

        self.grad_buffer = batch_grads + (beta/self.step**beta_sigma) * (self.grad_buffer - batch_grads)

        u_grad = self.grad_buffer.norm(dim=-1)

        alpha = u_grad.max() / (u_grad + 1e-8)
        new_grads = sum([alpha[i] * self.grad_buffer[i] for i in range(self.task_num)])

        self._reset_grad(new_grads)
        return batch_weight
# fmt: on


# median-research-group/LibMTL, LibMTL/weighting/MoCo.py, commit
# 8b8f1d030377b14d9c29017e11e2586944a23d9b. MIT licence (LibMTL).
# fmt: off
class MoCo(AbsWeighting):
    r"""MoCo.
    
    This method is proposed in `Mitigating Gradient Bias in Multi-objective Learning: A Provably Convergent Approach (ICLR 2023) <https://openreview.net/forum?id=dLAYGdKTi2>`_ \
    and implemented based on the author' sharing code (Heshan Fernando: fernah@rpi.edu). 

    Args:
        MoCo_beta (float, default=0.5): The learning rate of y.
        MoCo_beta_sigma (float, default=0.5): The decay rate of MoCo_beta.
        MoCo_gamma (float, default=0.1): The learning rate of lambd.
        MoCo_gamma_sigma (float, default=0.5): The decay rate of MoCo_gamma.
        MoCo_rho (float, default=0): The \ell_2 regularization parameter of lambda's update.

    .. warning::
            MoCo is not supported by representation gradients, i.e., ``rep_grad`` must be ``False``.

    """
    def __init__(self):
        super(MoCo, self).__init__()

    def init_param(self):
        self._compute_grad_dim()
        self.step = 0
        self.y = torch.zeros(self.task_num, self.grad_dim).to(self.device)
        self.lambd = (torch.ones([self.task_num, ]) / self.task_num).to(self.device)
        
    def backward(self, losses, **kwargs):
        self.step += 1
        beta, beta_sigma = kwargs['MoCo_beta'], kwargs['MoCo_beta_sigma']
        gamma, gamma_sigma = kwargs['MoCo_gamma'], kwargs['MoCo_gamma_sigma']
        rho = kwargs['MoCo_rho']

        if self.rep_grad:
            raise ValueError('No support method MoCo with representation gradients (rep_grad=True)')
        else:
            self._compute_grad_dim()
            grads = self._compute_grad(losses, mode='backward')

        with torch.no_grad():
            for tn in range(self.task_num):
                grads[tn] = grads[tn]/(grads[tn].norm()+1e-8)*losses[tn]
        self.y = self.y - (beta/self.step**beta_sigma) * (self.y - grads)
        self.lambd = F.softmax(self.lambd - (gamma/self.step**gamma_sigma) * (self.y@self.y.t()+rho*torch.eye(self.task_num).to(self.device))@self.lambd, -1)
        new_grads = self.y.t()@self.lambd

        self._reset_grad(new_grads)
        return self.lambd.detach().cpu().numpy()
# fmt: on


# heshandevaka/MoCo (the MoCo authors' repository), LibMTL/build/lib/LibMTL/
# weighting/Tracking.py, commit 88ec9e2ed8e903bd7b786ec2495503bb9a828ef0 (no
# licence file in the repository).
# fmt: off
class Tracking(AbsWeighting):
    r"""Tracking (placrholder).
    

    Args:
        beta (float, default=0.1): learning rate for tracking variable
        sigma2 (float, default=0.5): decay rate for lr of tracking variable
        delta (float, default=0.1): learning rate for lambda parameter 
        sigma3 (float, default=0.5): decay rate for lr of lambda parametr

    .. warning::
            Tracking is not supported by representation gradients, i.e., ``rep_grad`` must be ``False``.

    """
    def __init__(self):
        super(Tracking, self).__init__()
        self.step = 1
    
    def init_param(self):
        self.y = 0
        self.lambd = 1/self.task_num*torch.ones([self.task_num, ])

    def projection_simplex_sort(self, v, z=1):
        n_features = v.shape[0]
        u = np.sort(v)[::-1]
        cssv = np.cumsum(u) - z
        ind = np.arange(n_features) + 1
        cond = u - cssv / ind > 0
        rho = ind[cond][-1]
        theta = cssv[cond][-1] / float(rho)
        w = np.maximum(v - theta, 0)
        return w       
    
    def _record_aux_data(self, data, beta, delta, sigma2, sigma3, seed):
        filename = f"log_aux_data_beta-{beta}_delta-{delta}_sigma2-{sigma2}_sigma3-{sigma3}_seed-{seed}"
        with open(filename, 'a+') as f:
            f.write(data+'\n')
        
    def backward(self, losses, large_losses=None, **kwargs):
        if large_losses is not None: # Calculating large batch (true) gradient for jacobian
            self._compute_grad_dim()
            grads = self._compute_grad(losses, mode='autograd')
            A = grads@torch.transpose(grads ,0, 1)

            eigmin = torch.min(torch.linalg.eigvals(A).float())
            eigmax = torch.max(torch.linalg.eigvals(A).float())
            kappa = eigmax/eigmin
            
            return eigmin, kappa
        
        else:
            beta, delta, sigma2, sigma3, seed = kwargs['beta'], kwargs['delta'], kwargs['sigma2'], kwargs['sigma3'], kwargs['seed']
            if self.rep_grad:
                raise ValueError('No support method Tracking with representation gradients (rep_grad=True)')
    #             per_grads = self._compute_grad(losses, mode='backward', rep_grad=True)
    #             grads = per_grads.reshape(self.task_num, self.rep.size()[0], -1).sum(1)
            else:
                self._compute_grad_dim()
                grads = self._compute_grad(losses, mode='backward')
            
            self.y = self.y - beta/self.step**sigma2*(self.y - torch.transpose(grads ,0, 1))
            # print(self.lambd.device, self.y.device)
            self.lambd = self.projection_simplex_sort(self.lambd - delta/self.step**sigma3*2*torch.transpose(self.y.cpu(), 0, 1)@(self.y.cpu()@self.lambd))
            self.step += 1
            new_grads = (self.y@self.lambd.to(self.device) )

            # record aux data here -----------------------------------------------
            if (self.step-1)==1 or (self.step-1)%50==0: 
                losses_data = ""
                grads_data = ""
                for i in range(self.task_num):
                    losses_data += f"{losses[i].cpu().detach().numpy()} "
                    grads_data += f"{np.linalg.norm(grads[i,:].cpu().detach().numpy())} "        

                multi_grad_data = f"{np.linalg.norm(new_grads.cpu().detach().numpy())}"

                G2 = grads.cpu().detach().numpy()@grads.cpu().detach().numpy().T
                Y2 = self.y.cpu().detach().numpy().T@self.y.cpu().detach().numpy()

                eigsG2, _ = np.linalg.eig(G2)
                eigsY2, _ = np.linalg.eig(Y2)
                kG2 = np.max(eigsG2)/np.min(eigsG2)
                kY2 = np.max(eigsY2)/np.min(eigsY2)

                data = f"{self.step} "+losses_data+grads_data+f"{kG2} {kY2} "+multi_grad_data
                self._record_aux_data(data, beta, delta, sigma2, sigma3, seed)
            # ---------------------------------------------------------------------
            
            self._reset_grad(new_grads)
            return self.lambd
# fmt: on


# OptMN-Lab/fairgrad, methods/weight_methods.py, commit
# bb7e8a606634408901969cf7a83467cee032cd76, class FairGrad: the method that
# computes the weights and the update (the class's other methods move
# gradients between the model and the [P, T] matrix, multiply the update by
# T "to match the sum loss" and clip it to max_norm). MIT licence, (c) 2024
# OptMN-Lab.
# fmt: off
class FairGrad:
    def __init__(self, n_tasks):  # (not the authors': the n_tasks it reads)
        self.n_tasks = n_tasks

    def fairgrad(self, grads, alpha=1.0):
        GG = grads.t().mm(grads).cpu()  # [num_tasks, num_tasks]

        x_start = np.ones(self.n_tasks) / self.n_tasks
        A = GG.data.cpu().numpy()

        def objfn(x):
            # return np.power(np.dot(A, x), alpha) - 1 / x
            return np.dot(A, x) - np.power(1 / x, 1 / alpha)

        res = least_squares(objfn, x_start, bounds=(0, np.inf))
        w_cpu = res.x
        ww = torch.Tensor(w_cpu).to(grads.device)
        g = (grads * ww.view(1, -1)).sum(1)
        return g, GG.data.cpu().numpy(), w_cpu
# fmt: on


# yifei-he/ExcessMTL (the ExcessMTL authors' repository), LibMTL/LibMTL/
# weighting/ExcessMTL.py, commit 1f831d0bd79cd1de541e71e860458bb731622c86 (no
# licence file in the repository).
# fmt: off
class ExcessMTL(AbsWeighting):
    def __init__(self):
        super(ExcessMTL, self).__init__()
        
    def init_param(self):
        self.loss_weight = torch.tensor([1.0]*self.task_num, device=self.device, requires_grad=False)
        self.grad_sum = None
        self.first_epoch = True
        
    def backward(self, losses, **kwargs):
        
        grads = self._get_grads(losses, mode='autograd')
        if self.rep_grad:
            per_grads, grads = grads[0], grads[1]

            grads = []
            for grad in per_grads:
                grads.append(torch.sum(grad, dim=0))
            grads = torch.stack(grads)
        
        if self.grad_sum is None:
            self.grad_sum = torch.zeros_like(grads)
        
        w = torch.zeros(self.task_num, device=self.device)
        for i in range(self.task_num):
            self.grad_sum[i] += grads[i]**2
            grad_i = grads[i]
            h_i = torch.sqrt(self.grad_sum[i] + 1e-7)
            w[i] = grad_i * (1 / h_i) @ grad_i.t()

        if self.first_epoch:
            self.initial_w = w
            self.first_epoch = False
        else:
            w = w / self.initial_w
            robust_step_size = kwargs['robust_step_size']
            self.loss_weight = self.loss_weight * torch.exp(w* robust_step_size)
            self.loss_weight = self.loss_weight / self.loss_weight.sum() * self.task_num
            self.loss_weight = self.loss_weight.detach().clone()
        print(self.loss_weight)

        self.encoder.zero_grad()
        loss = torch.mul(losses, self.loss_weight).sum()
        loss.backward()

        return self.loss_weight.cpu().numpy()
# fmt: on


# median-research-group/LibMTL, LibMTL/weighting/MoDo.py, commit
# 7a2cbe207c9d67c03b1f5bb9303e436ed8714ac3. MIT licence (LibMTL).
# fmt: off
class MoDo(AbsWeighting):
    r"""Multi-objective gradient with Double sampling (MoDo).
    
    This method is proposed in `Three-Way Trade-Off in Multi-Objective Learning: Optimization, Generalization and Conflict-Avoidance (NeurIPS 2023; JMLR 2024) <https://openreview.net/forum?id=yPkbdJxQ0o>`_ \
    and implemented by modifying from the `official PyTorch implementation <https://github.com/heshandevaka/Trade-Off-MOL>`_. 

    Args:
        MoDo_gamma (float, default=0.001): The learning rate of lambd.
        MoDo_rho (float, default=0.1): The \ell_2 regularization parameter of lambda's update.

    """
    def __init__(self):
        super().__init__()
    
    def init_param(self):
        self.lambd = 1/self.task_num*torch.ones([self.task_num, ]).to(self.device)

    def _projection2simplex(self, y):
        m = len(y)
        sorted_y = torch.sort(y, descending=True)[0]
        tmpsum = 0.0
        tmax_f = (torch.sum(y) - 1.0)/m
        for i in range(m-1):
            tmpsum += sorted_y[i]
            tmax = (tmpsum - 1)/ (i+1.0)
            if tmax > sorted_y[i+1]:
                tmax_f = tmax
                break
        return torch.max(y - tmax_f, torch.zeros(m).to(y.device))
        
    def backward(self, losses, **kwargs):
        # losses: [3, num_tasks] in MoDo
        assert self.rep_grad == False, "No support method MoDo with representation gradients (rep_grad=True)"

        MoDo_gamma, MoDo_rho = kwargs['MoDo_gamma'], kwargs['MoDo_rho']

        grads = []
        for i in range(3):
            grads.append(self._get_grads(losses[i], mode='backward'))
        grads = torch.stack(grads)

        # average the gradient in decorders if only 3rd gradient is used to update shared part
        for task in list(self.decoders.keys()):
            for p_idx, p in enumerate(self.decoders[task].parameters()):
                p.grad.data = p.grad.data/3

        self.lambd = self._projection2simplex(self.lambd - MoDo_gamma*(grads[0]@(torch.transpose(grads[1], 0, 1)@self.lambd )+MoDo_rho*self.lambd))

        self._backward_new_grads(self.lambd, grads=grads[2])
        return self.lambd.detach().cpu().numpy()
# fmt: on


# median-research-group/LibMTL, LibMTL/weighting/SDMGrad.py, commit
# 8bc760590d09fb3f48ef3b535efb66dcc750f5c9. MIT licence (LibMTL).
# fmt: off
class SDMGrad(AbsWeighting):
    r"""Stochastic Direction-oriented Multi-objective Gradient descent (SDMGrad).
    
    This method is proposed in `Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms (NeurIPS 2023) <https://openreview.net/forum?id=4Ks8RPcXd9>`_ \
    and implemented by modifying from the `official PyTorch implementation <https://github.com/OptMN-Lab/sdmgrad>`_. 

    Args:
        SDMGrad_lamda (float, default=0.3): The regularization hyperparameter.
        SDMGrad_niter (int, default=20): The update iteration of loss weights.

    """
    def __init__(self):
        super().__init__()
    
    def init_param(self):
        self.w = 1/self.task_num*torch.ones(self.task_num).to(self.device)

    def euclidean_proj_simplex(self, v, s=1):
        assert s > 0, "Radius s must be strictly positive (%d <= 0)" % s
        v = v.astype(np.float64)
        n, = v.shape  
        if v.sum() == s and np.alltrue(v >= 0):
            return v
        u = np.sort(v)[::-1]
        cssv = np.cumsum(u)
        rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - s))[0][-1]
        theta = float(cssv[rho] - s) / (rho + 1)
        w = (v - theta).clip(min=0)
        return w
        
    def backward(self, losses, **kwargs):
        # losses: [3, num_tasks] in SDMGrad
        assert self.rep_grad == False, "No support method SDMGrad with representation gradients (rep_grad=True)"

        SDMGrad_lamda, SDMGrad_niter = kwargs['SDMGrad_lamda'], kwargs['SDMGrad_niter']

        grads = []
        for i in range(3):
            grads.append(self._get_grads(losses[i], mode='backward'))

        zeta_grads, xi_grads1, xi_grads2 = grads
        GG = torch.mm(xi_grads1, xi_grads2.t())
        GG_diag = torch.diag(GG)
        GG_diag = torch.where(GG_diag < 0, torch.zeros_like(GG_diag), GG_diag)
        scale = torch.mean(torch.sqrt(GG_diag))
        GG = GG / (scale.pow(2) + 1e-8)
        Gg = torch.mean(GG, dim=1)

        self.w.requires_grad = True
        optimizer = torch.optim.SGD([self.w], lr=5, momentum=0.5)
        for i in range(SDMGrad_niter):
            optimizer.zero_grad()
            self.w.grad = torch.mv(GG, self.w.detach()) + SDMGrad_lamda * Gg
            optimizer.step()
            proj = self.euclidean_proj_simplex(self.w.data.cpu().numpy())
            self.w.data.copy_(torch.from_numpy(proj).data)
        self.w.requires_grad = False

        g0 = torch.mean(zeta_grads, dim=0)
        gw = (zeta_grads * self.w.view(-1, 1)).sum(0)
        g = (gw + SDMGrad_lamda * g0) / (1 + SDMGrad_lamda)

        self._reset_grad(g)
        return None
# fmt: on


# OptMN-Lab/sdmgrad (the SDMGrad authors' repository), methods/
# weight_methods.py, commit d17a3d68c31be33854c65320922adb568c1a7bc5, class
# SDMGrad: its weights' state and the two methods that compute the update
# (the others move gradients between the model and [P, T] matrices,
# multiply the update by T "to match the sum loss" and clip it to
# max_norm). MIT licence, (c) 2023 ml-opt-lab.
# fmt: off
class SDMGradOptMN:
    def __init__(self, n_tasks: int, device: torch.device):  # its __init__'s w
        self.w = 1 / n_tasks * torch.ones(n_tasks).to(device)

    def euclidean_proj_simplex(self, v, s=1):
        """ Compute the Euclidean projection on a positive simplex
        https://gist.github.com/daien/1272551/edd95a6154106f8e28209a1c7964623ef8397246#file-simplex_projection-py
        """
        assert s > 0, "Radius s must be strictly positive (%d <= 0)" % s
        v = v.astype(np.float64)
        n, = v.shape  # will raise ValueError if v is not 1-D
        # check if we are already on the simplex
        if v.sum() == s and np.alltrue(v >= 0):
            # best projection: itself!
            return v
        # get the array of cumulative sums of a sorted (decreasing) copy of v
        u = np.sort(v)[::-1]
        cssv = np.cumsum(u)
        # get the number of > 0 components of the optimal solution
        rho = np.nonzero(u * np.arange(1, n + 1) > (cssv - s))[0][-1]
        # compute the Lagrange multiplier associated to the simplex constraint
        theta = float(cssv[rho] - s) / (rho + 1)
        # compute the projection by thresholding v using theta
        w = (v - theta).clip(min=0)
        return w

    def sdmgrad(self, w, grads, lamda=0.3, niter=20):
        zeta_grads, xi_grads1, xi_grads2 = grads
        GG = torch.mm(xi_grads1.t(), xi_grads2)
        scale = torch.mean(torch.sqrt(torch.diag(GG) + 1e-4))
        GG = GG / scale.pow(2)
        Gg = torch.mean(GG, dim=1)

        w.requires_grad = True
        optimizer = torch.optim.SGD([w], lr=10, momentum=0.5)
        # scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=[lambda epoch: 1 / np.sqrt(epoch + 1)])
        for i in range(niter):
            optimizer.zero_grad()
            w.grad = torch.mv(GG, w.detach()) + lamda * Gg
            optimizer.step()
            proj = self.euclidean_proj_simplex(w.data.cpu().numpy())
            w.data.copy_(torch.from_numpy(proj).data)
            # scheduler.step()
        w.requires_grad = False

        g0 = torch.mean(zeta_grads, dim=1)
        gw = torch.sum(zeta_grads * w, dim=1)
        g = (gw + lamda * g0) / (1 + lamda)
        return g, GG.data.cpu().numpy()
# fmt: on


# AvivNavon/nash-mtl, methods/weight_methods.py, commit
# 8748f1ae1952d246c4f5387908cdbbe30903fda6: the base class WeightMethod and
# NashMTL. MIT licence, (c) 2022 Aviv Navon.
# fmt: off
class WeightMethod:
    def __init__(self, n_tasks: int, device: torch.device):
        super().__init__()
        self.n_tasks = n_tasks
        self.device = device

    @abstractmethod
    def get_weighted_loss(
        self,
        losses: torch.Tensor,
        shared_parameters: Union[List[torch.nn.parameter.Parameter], torch.Tensor],
        task_specific_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ],
        last_shared_parameters: Union[List[torch.nn.parameter.Parameter], torch.Tensor],
        representation: Union[torch.nn.parameter.Parameter, torch.Tensor],
        **kwargs,
    ):
        pass

    def backward(
        self,
        losses: torch.Tensor,
        shared_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        task_specific_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        last_shared_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        representation: Union[List[torch.nn.parameter.Parameter], torch.Tensor] = None,
        **kwargs,
    ) -> Tuple[Union[torch.Tensor, None], Union[dict, None]]:
        """

        Parameters
        ----------
        losses :
        shared_parameters :
        task_specific_parameters :
        last_shared_parameters : parameters of last shared layer/block
        representation : shared representation
        kwargs :

        Returns
        -------
        Loss, extra outputs
        """
        loss, extra_outputs = self.get_weighted_loss(
            losses=losses,
            shared_parameters=shared_parameters,
            task_specific_parameters=task_specific_parameters,
            last_shared_parameters=last_shared_parameters,
            representation=representation,
            **kwargs,
        )
        loss.backward()
        return loss, extra_outputs

    def __call__(
        self,
        losses: torch.Tensor,
        shared_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        task_specific_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        **kwargs,
    ):
        return self.backward(
            losses=losses,
            shared_parameters=shared_parameters,
            task_specific_parameters=task_specific_parameters,
            **kwargs,
        )

    def parameters(self) -> List[torch.Tensor]:
        """return learnable parameters"""
        return []


class NashMTL(WeightMethod):
    def __init__(
        self,
        n_tasks: int,
        device: torch.device,
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter=20,
    ):
        super(NashMTL, self).__init__(
            n_tasks=n_tasks,
            device=device,
        )

        self.optim_niter = optim_niter
        self.update_weights_every = update_weights_every
        self.max_norm = max_norm

        self.prvs_alpha_param = None
        self.normalization_factor = np.ones((1,))
        self.init_gtg = self.init_gtg = np.eye(self.n_tasks)
        self.step = 0.0
        self.prvs_alpha = np.ones(self.n_tasks, dtype=np.float32)

    def _stop_criteria(self, gtg, alpha_t):
        return (
            (self.alpha_param.value is None)
            or (np.linalg.norm(gtg @ alpha_t - 1 / (alpha_t + 1e-10)) < 1e-3)
            or (
                np.linalg.norm(self.alpha_param.value - self.prvs_alpha_param.value)
                < 1e-6
            )
        )

    def solve_optimization(self, gtg: np.array):
        self.G_param.value = gtg
        self.normalization_factor_param.value = self.normalization_factor

        alpha_t = self.prvs_alpha
        for _ in range(self.optim_niter):
            self.alpha_param.value = alpha_t
            self.prvs_alpha_param.value = alpha_t

            try:
                self.prob.solve(solver=cp.ECOS, warm_start=True, max_iters=100)
            except:
                self.alpha_param.value = self.prvs_alpha_param.value

            if self._stop_criteria(gtg, alpha_t):
                break

            alpha_t = self.alpha_param.value

        if alpha_t is not None:
            self.prvs_alpha = alpha_t

        return self.prvs_alpha

    def _calc_phi_alpha_linearization(self):
        G_prvs_alpha = self.G_param @ self.prvs_alpha_param
        prvs_phi_tag = 1 / self.prvs_alpha_param + (1 / G_prvs_alpha) @ self.G_param
        phi_alpha = prvs_phi_tag @ (self.alpha_param - self.prvs_alpha_param)
        return phi_alpha

    def _init_optim_problem(self):
        self.alpha_param = cp.Variable(shape=(self.n_tasks,), nonneg=True)
        self.prvs_alpha_param = cp.Parameter(
            shape=(self.n_tasks,), value=self.prvs_alpha
        )
        self.G_param = cp.Parameter(
            shape=(self.n_tasks, self.n_tasks), value=self.init_gtg
        )
        self.normalization_factor_param = cp.Parameter(
            shape=(1,), value=np.array([1.0])
        )

        self.phi_alpha = self._calc_phi_alpha_linearization()

        G_alpha = self.G_param @ self.alpha_param
        constraint = []
        for i in range(self.n_tasks):
            constraint.append(
                -cp.log(self.alpha_param[i] * self.normalization_factor_param)
                - cp.log(G_alpha[i])
                <= 0
            )
        obj = cp.Minimize(
            cp.sum(G_alpha) + self.phi_alpha / self.normalization_factor_param
        )
        self.prob = cp.Problem(obj, constraint)

    def get_weighted_loss(
        self,
        losses,
        shared_parameters,
        **kwargs,
    ):
        """

        Parameters
        ----------
        losses :
        shared_parameters : shared parameters
        kwargs :

        Returns
        -------

        """

        extra_outputs = dict()
        if self.step == 0:
            self._init_optim_problem()

        if (self.step % self.update_weights_every) == 0:
            self.step += 1

            grads = {}
            for i, loss in enumerate(losses):
                g = list(
                    torch.autograd.grad(
                        loss,
                        shared_parameters,
                        retain_graph=True,
                    )
                )
                grad = torch.cat([torch.flatten(grad) for grad in g])
                grads[i] = grad

            G = torch.stack(tuple(v for v in grads.values()))
            GTG = torch.mm(G, G.t())

            self.normalization_factor = (
                torch.norm(GTG).detach().cpu().numpy().reshape((1,))
            )
            GTG = GTG / self.normalization_factor.item()
            alpha = self.solve_optimization(GTG.cpu().detach().numpy())
            alpha = torch.from_numpy(alpha)

        else:
            self.step += 1
            alpha = self.prvs_alpha

        weighted_loss = sum([losses[i] * alpha[i] for i in range(len(alpha))])
        extra_outputs["weights"] = alpha
        return weighted_loss, extra_outputs

    def backward(
        self,
        losses: torch.Tensor,
        shared_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        task_specific_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        last_shared_parameters: Union[
            List[torch.nn.parameter.Parameter], torch.Tensor
        ] = None,
        representation: Union[List[torch.nn.parameter.Parameter], torch.Tensor] = None,
        **kwargs,
    ) -> Tuple[Union[torch.Tensor, None], Union[Dict, None]]:
        loss, extra_outputs = self.get_weighted_loss(
            losses=losses,
            shared_parameters=shared_parameters,
            **kwargs,
        )
        loss.backward()

        # make sure the solution for shared params has norm <= self.eps
        if self.max_norm > 0:
            torch.nn.utils.clip_grad_norm_(shared_parameters, self.max_norm)

        return loss, extra_outputs
# fmt: on


# ---- gradient sets (those of tests/core/weighting/hard_cases.py) -------------


def opposed(rng, t=2, p=P, cos=-0.999):
  """g_1 and g_2 at cosine `cos`, norms 1 and 3; the others random."""
  g = rng.normal(size=(t, p))
  u = g[0] / np.linalg.norm(g[0])
  n = g[1] - (g[1] @ u) * u
  g[0] = u
  g[1] = 3.0 * (cos * u + np.sqrt(1 - cos**2) * n / np.linalg.norm(n))
  return g


def scaled(rng, t=3, p=P):
  """Norms spread over 100-fold."""
  return rng.normal(size=(t, p)) * np.logspace(0, 2, t)[:, None]


def nearly_parallel(rng, t=5, p=P, spread=3e-3):
  """cos >= ~1 - spread^2, norms 0.5 to 2."""
  base = rng.normal(size=p)
  noise = rng.normal(size=(t, p)) / np.sqrt(p)
  g = base + spread * np.linalg.norm(base) * noise
  return g * rng.uniform(0.5, 2.0, size=(t, 1))


def opposed_scaled(rng, t=4, p=P):
  """Opposed pair inside 100-fold scales, shuffled."""
  g = opposed(rng, t, p, cos=-0.99)
  return g * np.logspace(0, 2, t)[rng.permutation(t)][:, None]


def with_zero(rng, t=3, p=P):
  g = rng.normal(size=(t, p))
  g[1] = 0.0
  return g


def pair(rng, cos, scale, p=P):
  """Two gradients at the given cosine, norms 1 and `scale`."""
  a, b = rng.normal(size=p), rng.normal(size=p)
  b -= (b @ a) / (a @ a) * a
  a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
  return np.stack([a, scale * (cos * a + np.sqrt(1 - cos**2) * b)])


SETS = {
  'opposed2': lambda r: opposed(r, 2),
  'opposed3': lambda r: opposed(r, 3),
  'opposed5': lambda r: opposed(r, 5, cos=-0.99),
  'scaled3': lambda r: scaled(r, 3),
  'scaled5': lambda r: scaled(r, 5),
  'opposed_scaled4': lambda r: opposed_scaled(r, 4),
  'opposed_scaled6': lambda r: opposed_scaled(r, 6),
  'parallel5': lambda r: nearly_parallel(r, 5),
  'parallel6_close': lambda r: nearly_parallel(r, 6, spread=1e-3),
  'random6': lambda r: r.normal(size=(6, P)),
  'random10': lambda r: r.normal(size=(10, 12)),
  'zero_task': lambda r: with_zero(r, 3),
}
# The sets over 20 steps (opposed3 is single-set only).
TRAJECTORY_SETS = [name for name in SETS if name != 'opposed3']

TWO_TASK_SETS = {  # (cosine, scale of g_2)
  'opposed': (-0.999, 3.0),
  'conflicting': (-0.5, 1.0),
  'mild': (-0.1, 1.0),
  'orthogonal': (0.0, 2.0),
  'agreeing': (0.6, 1.0),
  'nearly_parallel': (0.99999, 1.5),
  'scaled_100x_opposed': (-0.9, 100.0),
  'scaled_100x_conflicting': (-0.3, 100.0),
  'tiny_scale': (-0.7, 0.01),
  'shorter_dominates': (0.9, 5.0),
}


def f32(x):
  """The float32 number nearest x, as float64."""
  return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def single_sets(seeds=(0, 1)):
  """(name, g [T, P]): the two-task pairs and every set at each seed."""
  out = [
    (name, f32(pair(np.random.default_rng(seed), cos, scale)))
    for seed, (name, (cos, scale)) in enumerate(TWO_TASK_SETS.items())
  ]
  out += [
    (f'{name}_seed{seed}', f32(make(np.random.default_rng(seed))))
    for name, make in SETS.items()
    for seed in seeds
  ]
  return out


def trajectory(name, seed=0, scale=1.0):
  """20 steps: a new draw of set `name` (times `scale`) and losses in
  [0.05, 3] at each step."""
  rng = np.random.default_rng(seed)
  g = np.stack([SETS[name](rng) * scale for _ in range(STEPS)])
  losses = rng.uniform(0.05, 3.0, size=g.shape[:2])
  return f32(g), f32(losses)


def parts_trajectory(name, seed=0, scale=1.0):
  """20 steps of three samples [3, T, P] around a new draw of set `name`."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(STEPS):
    base = SETS[name](rng) * scale
    t, p = base.shape
    noise = rng.normal(size=(3, t, p)) / np.sqrt(p)
    parts = base + 0.3 * noise * np.linalg.norm(base, axis=1, keepdims=True)
    if name == 'zero_task':  # the same task's gradient is zero every step
      parts[:, 1] = 0.0
    out.append(parts)
  return f32(np.stack(out))


def nine(x):
  """float32 numbers with 9 significant digits (exact as float32)."""
  return np.vectorize(lambda v: float(f'{v:.9g}'), otypes=[float])(
    np.asarray(x, np.float32)
  ).tolist()


def moved_by_one_ulp(x, rng):
  """x with every entry moved by up to one float32 ulp (2^-23 relative),
  rounded to float32 again."""
  return f32(x * (1.0 + 2.0**-23 * rng.uniform(-1.0, 1.0, np.shape(x))))


# ---- harnesses ---------------------------------------------------------------


def libmtl_harness(cls, num_tasks, num_params):
  class Harness(cls):
    """The method on one shared parameter vector theta (rep_grad=False),
    theta the trainer's encoder."""

    def __init__(self):
      super().__init__()
      self.task_num, self.device, self.rep_grad = num_tasks, 'cpu', False
      self.task_name = [f'task{t}' for t in range(num_tasks)]
      self.encoder = torch.nn.Module()
      self.encoder.theta = torch.nn.Parameter(torch.zeros(num_params))
      self.decoders = {}
      self.init_param()

    def get_share_params(self):
      return [self.encoder.theta]

    def zero_grad_share_params(self):
      if self.encoder.theta.grad is not None:
        self.encoder.theta.grad.zero_()

    def _record_aux_data(self, *args):
      """Tracking's log file: not written here."""

    def run(self, g, losses, **kwargs):
      """(what backward returns, the gradient left on theta)."""
      theta = self.encoder.theta
      theta.grad = None  # the trainer's optimizer.zero_grad()
      if np.ndim(g) == 3:  # MoDo's and SDMGrad's samples
        values = [
          torch.as_tensor(gk) @ theta + torch.as_tensor(lk)
          for gk, lk in zip(g, losses, strict=True)
        ]
      else:
        values = torch.as_tensor(g) @ theta + torch.as_tensor(losses)
      with contextlib.redirect_stdout(io.StringIO()):  # ExcessMTL prints
        returned = self.backward(values, **kwargs)
      if returned is not None:
        returned = np.asarray(returned, np.float64).tolist()
      return returned, theta.grad.detach().clone().numpy()

  return Harness()


def source(repo, path, commit, what=''):
  return {
    'repository': repo,
    'path': path,
    'commit': commit,
    'what': what,
    'command': COMMAND,
    'run': 'torch float64',
  }


LIBMTL = 'median-research-group/LibMTL'


# ---- DB-MTL ------------------------------------------------------------------


def db_mtl_fixture():
  runs = [(n, 0.9, 0.0) for n in TRAJECTORY_SETS]
  runs += [(n, 0.5, 0.5) for n in ('opposed5', 'scaled5', 'random6')]
  cases = []
  for name, beta, beta_sigma in runs:
    g, losses = trajectory(name)
    method = libmtl_harness(DB_MTL, g.shape[1], g.shape[2])
    steps = []
    for gk, lk in zip(g, losses, strict=True):
      _, combined = method.run(gk, lk, DB_beta=beta, DB_beta_sigma=beta_sigma)
      steps.append(
        {
          'gradients': nine(gk),
          'losses': nine(lk),
          'combined': combined.tolist(),
        }
      )
    cases.append(
      {'name': name, 'beta': beta, 'beta_sigma': beta_sigma, 'steps': steps}
    )
  return {
    'source': source(
      LIBMTL,
      'LibMTL/weighting/DB_MTL.py',
      '7b0f56a7ee61f9fc17738dd221bb017d04999832',
      'DB_MTL.backward',
    ),
    'cases': cases,
  }


# ---- MoCo --------------------------------------------------------------------

MOCO_DEFAULTS = dict(
  MoCo_beta=0.5,
  MoCo_beta_sigma=0.5,
  MoCo_gamma=0.1,
  MoCo_gamma_sigma=0.5,
  MoCo_rho=0.0,
)
TRACKING_DEFAULTS = dict(beta=0.1, delta=0.1, sigma2=0.5, sigma3=0.5, seed=0)


def moco_fixture():
  cases = []
  runs = [('libmtl', n, 1.0, MOCO_DEFAULTS) for n in TRAJECTORY_SETS]
  runs += [('libmtl', 'opposed5', 1.0, {**MOCO_DEFAULTS, 'MoCo_rho': 0.5})]
  # Algorithm 1's step gamma Y Y^T lambda: at gradient norms ~0.1 lambda
  # stays inside the simplex for a while.
  runs += [('tracking', n, 0.1, TRACKING_DEFAULTS) for n in TRAJECTORY_SETS]
  runs += [
    ('tracking', n, 1.0, TRACKING_DEFAULTS)
    for n in ('opposed2', 'scaled3', 'random6')
  ]
  for code, name, scale, kwargs in runs:
    g, losses = trajectory(name, scale=scale)
    cls = MoCo if code == 'libmtl' else Tracking
    method = libmtl_harness(cls, g.shape[1], g.shape[2])
    steps = []
    for gk, lk in zip(g, losses, strict=True):
      lambdas, combined = method.run(gk, lk, **kwargs)
      steps.append(
        {
          'gradients': nine(gk),
          'losses': nine(lk),
          'lambdas': lambdas,
          'combined': combined.tolist(),
        }
      )
    cases.append(
      {
        'name': name,
        'code': code,
        'scale': scale,
        'kwargs': kwargs,
        'steps': steps,
      }
    )
  return {
    'source': {
      'libmtl': source(
        LIBMTL,
        'LibMTL/weighting/MoCo.py',
        '8b8f1d030377b14d9c29017e11e2586944a23d9b',
        'MoCo.backward',
      ),
      'tracking': source(
        'heshandevaka/MoCo',
        'LibMTL/build/lib/LibMTL/weighting/Tracking.py',
        '88ec9e2ed8e903bd7b786ec2495503bb9a828ef0',
        'Tracking.backward',
      ),
    },
    'cases': cases,
  }


# ---- FairGrad ----------------------------------------------------------------


def fairgrad_step(g, alpha):
  """The authors' FairGrad.fairgrad on one gradient set (grads [P, T])."""
  method = FairGrad(len(g))
  update, _, w = method.fairgrad(
    torch.as_tensor(g).t().contiguous(), alpha=alpha
  )
  return {
    'gradients': nine(g),
    'w': np.asarray(w).tolist(),
    'combined': update.numpy().tolist(),
  }


def fairgrad_fixture():
  sets = single_sets()
  runs = [(n, g, 1.0) for n, g in sets]
  # Other alphas on 4 to 6 tasks (mtl compiles once per alpha and count).
  some = [(n, g) for n, g in sets if n.endswith('_seed0') and 4 <= len(g) <= 6]
  runs += [(n, g, a) for n, g in some for a in (0.5, 2.0, 5.0)]
  cases = [
    {'name': name, 'alpha': alpha, 'steps': [fairgrad_step(g, alpha)]}
    for name, g, alpha in runs
  ]
  # 20 steps (the authors' code starts each from 1/T; mtl's from its
  # previous solution).
  for name in ('opposed5', 'scaled3', 'random6'):
    g, _ = trajectory(name)
    steps = [fairgrad_step(gk, 1.0) for gk in g]
    cases.append({'name': f'{name}_20_steps', 'alpha': 1.0, 'steps': steps})
  return {
    'source': source(
      'OptMN-Lab/fairgrad',
      'methods/weight_methods.py',
      'bb7e8a606634408901969cf7a83467cee032cd76',
      'FairGrad.fairgrad',
    ),
    'cases': cases,
  }


# ---- ExcessMTL ---------------------------------------------------------------


def excess_mtl_fixture():
  runs = [(n, 1e-2) for n in TRAJECTORY_SETS]
  runs += [
    (n, 1.0)
    for n in ('opposed2', 'scaled5', 'opposed_scaled6', 'random10', 'zero_task')
  ]
  cases = []
  for name, step_size in runs:
    g, losses = trajectory(name)
    if name == 'zero_task':  # zero from step 2 on, not at step 1
      g[0, 1] = f32(np.random.default_rng(9).normal(size=g.shape[2]))
    method = libmtl_harness(ExcessMTL, g.shape[1], g.shape[2])
    steps = []
    for gk, lk in zip(g, losses, strict=True):
      weights, combined = method.run(gk, lk, robust_step_size=step_size)
      steps.append(
        {
          'gradients': nine(gk),
          'losses': nine(lk),
          'weights': weights,
          'combined': combined.tolist(),
        }
      )
    cases.append({'name': name, 'step_size': step_size, 'steps': steps})
  # A task whose gradient is zero at step 1: its first estimate is 0.
  g, losses = trajectory('zero_task')
  method = libmtl_harness(ExcessMTL, g.shape[1], g.shape[2])
  steps = []
  for gk, lk in zip(g[:3], losses[:3], strict=True):
    weights, combined = method.run(gk, lk, robust_step_size=1e-2)
    steps.append(
      {
        'gradients': nine(gk),
        'losses': nine(lk),
        'weights': weights,
        'combined': combined.tolist(),
      }
    )
  cases.append({'name': 'zero_at_step_1', 'step_size': 1e-2, 'steps': steps})
  return {
    'source': source(
      'yifei-he/ExcessMTL',
      'LibMTL/LibMTL/weighting/ExcessMTL.py',
      '1f831d0bd79cd1de541e71e860458bb731622c86',
      'ExcessMTL.backward',
    ),
    'cases': cases,
  }


# ---- MoDo --------------------------------------------------------------------


def modo_fixture():
  runs = [(n, dict(MoDo_gamma=1e-3, MoDo_rho=0.1)) for n in TRAJECTORY_SETS]
  runs += [
    (n, dict(MoDo_gamma=0.1, MoDo_rho=0.0))
    for n in ('opposed5', 'scaled3', 'random6', 'zero_task')
  ]
  cases = []
  for name, kwargs in runs:
    parts = parts_trajectory(name)
    method = libmtl_harness(MoDo, parts.shape[2], parts.shape[3])
    steps = []
    for gk in parts:
      lambdas, combined = method.run(gk, np.ones(gk.shape[:2]), **kwargs)
      steps.append(
        {'samples': nine(gk), 'lambdas': lambdas, 'combined': combined.tolist()}
      )
    cases.append({'name': name, 'kwargs': kwargs, 'steps': steps})
  return {
    'source': source(
      LIBMTL,
      'LibMTL/weighting/MoDo.py',
      '7a2cbe207c9d67c03b1f5bb9303e436ed8714ac3',
      'MoDo.backward',
    ),
    'cases': cases,
  }


# ---- SDMGrad -----------------------------------------------------------------


def sdmgrad_libmtl(parts, lamda, niter):
  """(w and d at each step) of LibMTL's SDMGrad."""
  method = libmtl_harness(SDMGrad, parts.shape[2], parts.shape[3])
  ws, ds = [], []
  for gk in parts:
    _, combined = method.run(
      gk, np.ones(gk.shape[:2]), SDMGrad_lamda=lamda, SDMGrad_niter=niter
    )
    ws.append(method.w.detach().clone().numpy().tolist())
    ds.append(combined.tolist())
  return ws, ds


def sdmgrad_optmn(parts, lamda, niter):
  """(w and d at each step) of OptMN-Lab's SDMGrad.sdmgrad (grads [P, T])."""
  method = SDMGradOptMN(parts.shape[2], 'cpu')
  ws, ds = [], []
  for gk in parts:
    grads = [torch.as_tensor(x).t().contiguous() for x in gk]
    g, _ = method.sdmgrad(method.w, grads, lamda=lamda, niter=niter)
    ws.append(method.w.detach().clone().numpy().tolist())
    ds.append(g.detach().numpy().tolist())
  return ws, ds


def sdmgrad_fixture(draws=3):
  runs = [('libmtl', n, 0.3, 20) for n in TRAJECTORY_SETS]
  runs += [('libmtl', n, 1.0, 5) for n in ('opposed2', 'scaled5', 'random6')]
  runs += [
    ('optmn', n, 0.6, 20)
    for n in (
      'opposed2',
      'scaled3',
      'opposed_scaled4',
      'parallel5',
      'random6',
      'zero_task',
    )
  ]
  runs += [('optmn', n, 0.3, 20) for n in ('opposed2', 'scaled3')]
  solvers = {'libmtl': sdmgrad_libmtl, 'optmn': sdmgrad_optmn}
  cases = []
  for code, name, lamda, niter in runs:
    parts = parts_trajectory(name)
    ws, ds = solvers[code](parts, lamda, niter)
    # The authors' own change of d when the samples move by one ulp.
    rng, spread = np.random.default_rng(17), np.zeros(STEPS)
    for _ in range(draws):
      moved = np.asarray(
        solvers[code](moved_by_one_ulp(parts, rng), lamda, niter)[1]
      )
      spread = np.maximum(
        spread, np.linalg.norm(moved - ds, axis=1) / np.linalg.norm(ds, axis=1)
      )
    steps = [
      {'samples': nine(gk), 'w': w, 'combined': d, 'ulp_spread': float(u)}
      for gk, w, d, u in zip(parts, ws, ds, spread, strict=True)
    ]
    cases.append(
      {
        'name': name,
        'code': code,
        'lamda': lamda,
        'niter': niter,
        'steps': steps,
      }
    )
  return {
    'source': {
      'libmtl': source(
        LIBMTL,
        'LibMTL/weighting/SDMGrad.py',
        '8bc760590d09fb3f48ef3b535efb66dcc750f5c9',
        'SDMGrad.backward',
      ),
      'optmn': source(
        'OptMN-Lab/sdmgrad',
        'methods/weight_methods.py',
        'd17a3d68c31be33854c65320922adb568c1a7bc5',
        'SDMGrad.sdmgrad',
      ),
    },
    'cases': cases,
  }


# ---- Nash-MTL ----------------------------------------------------------------


def nash_run(method, g, losses):
  """One step of NashMTL.backward: {gradients, alpha, combined}, or
  {gradients, error} where it raises."""
  theta = torch.nn.Parameter(torch.zeros(g.shape[1]))
  values = torch.as_tensor(g) @ theta + torch.as_tensor(losses)
  row = {'gradients': nine(g)}
  try:
    _, extra = method.backward(values, shared_parameters=[theta])
  except ValueError as e:  # cvxpy: a zero gradient makes ECOS return inf
    return {**row, 'error': f'{type(e).__name__}: {e}'}
  alpha = np.asarray(extra['weights'], np.float64)
  return {
    **row,
    'alpha': alpha.tolist(),
    'combined': theta.grad.detach().numpy().tolist(),
  }


def nash_fixture():
  cases = []
  for name, g in single_sets():
    method = NashMTL(len(g), 'cpu', max_norm=0.0)
    steps = [nash_run(method, g, np.ones(len(g)))]
    cases.append({'name': name, 'update_every': 1, 'steps': steps})
  runs = [(n, 1) for n in TRAJECTORY_SETS] + [('random6', 3)]
  for name, every in runs:
    g, losses = trajectory(name)
    method = NashMTL(
      g.shape[1], 'cpu', max_norm=0.0, update_weights_every=every
    )
    steps = []
    for gk, lk in zip(g, losses, strict=True):
      steps.append(nash_run(method, gk, lk))
      if 'error' in steps[-1]:
        break
    cases.append(
      {'name': f'{name}_20_steps', 'update_every': every, 'steps': steps}
    )
  return {
    'source': source(
      'AvivNavon/nash-mtl',
      'methods/weight_methods.py',
      '8748f1ae1952d246c4f5387908cdbbe30903fda6',
      'NashMTL.backward, max_norm=0',
    ),
    'cases': cases,
  }


def main():
  torch.set_default_dtype(torch.float64)
  makers = {
    'db_mtl': db_mtl_fixture,
    'moco': moco_fixture,
    'fairgrad': fairgrad_fixture,
    'excess_mtl': excess_mtl_fixture,
    'modo': modo_fixture,
    'sdmgrad': sdmgrad_fixture,
    'nash_mtl': nash_fixture,
  }
  only = sys.argv[1:] or list(makers)
  OUT.mkdir(parents=True, exist_ok=True)
  for name in only:
    path = OUT / f'{name}_authors.json'
    fixture = makers[name]()
    # One case a line.
    head = json.dumps({k: v for k, v in fixture.items() if k != 'cases'})
    rows = ',\n'.join(json.dumps(case) for case in fixture['cases'])
    path.write_text(f'{head[:-1]}, "cases": [\n{rows}\n]}}\n')
    print(f'wrote {path}')


if __name__ == '__main__':
  main()
