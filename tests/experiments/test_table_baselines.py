"""experiments/table_baselines.py: ordered target statistics, the one-hot
design, the logistic regression's C chosen on validation.

Oracles: hand-computed CatBoost ordered statistics (Prokhorenkova et al.,
NeurIPS 2018); scikit-learn's OneHotEncoder, MultiLabelBinarizer,
LogisticRegression, Ridge and roc_auc_score run directly on the same rows.
"""

import importlib.util
import pathlib

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer, OneHotEncoder

from mtl.core.layers.embedding import Column
from mtl.core.tasks import Task
from mtl.data.dataset import Dataset

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
  'table_baselines', REPO / 'experiments' / 'table_baselines.py'
)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)

C_GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


def test_ordered_encoding_equals_a_hand_computed_example():
  ids = np.array([7, 3, 7, 7, 3])
  y = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
  # prior 0.5, smooth 1: (sum of earlier labels + 0.5) / (earlier rows + 1).
  got = exp.ordered_target_encoding(ids, y, 0.5, np.arange(5), smooth=1.0)
  np.testing.assert_allclose(got, [0.5, 0.5, 0.75, 0.5, 0.25])
  # Reversed: row 4 first (id 3), then 3, 2 (id 7), 1 (id 3), 0 (id 7).
  got = exp.ordered_target_encoding(ids, y, 0.5, np.arange(5)[::-1], 1.0)
  np.testing.assert_allclose(got, [1.5 / 3, 1.5 / 2, 1.5 / 2, 0.5, 0.5])
  # Smoothing 10 with prior 0.2, identity order: row 3 saw labels 1, 0.
  got = exp.ordered_target_encoding(ids, y, 0.2, np.arange(5))
  assert got[3] == pytest.approx((1 + 0 + 10 * 0.2) / (2 + 10))


def test_ordered_encoding_never_sees_its_own_label():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 4, 40)
  y = rng.normal(size=40)
  order = rng.permutation(40)
  base = exp.ordered_target_encoding(ids, y, 0.1, order)
  position = np.argsort(order)
  for i in range(40):
    flipped = y.copy()
    flipped[i] += 3.7
    got = exp.ordered_target_encoding(ids, flipped, 0.1, order)
    assert got[i] == base[i]  # Bit for bit: its own label is never summed.
    later = (ids == ids[i]) & (position > position[i])
    assert np.all(got[later] != base[later])  # Later rows of the id do see it.
    assert np.array_equal(got[~later], base[~later])


def test_whole_training_statistic_for_other_rows():
  got = exp.target_statistic(
    np.array([1, 1, 2]), np.array([1.0, 0.0, 1.0]), np.array([1, 2, 9]), 0.4
  )
  np.testing.assert_allclose(got, [(1 + 4) / 12, (1 + 4) / 11, 0.4])


def _dataset(seed=0):
  """Two categoricals (a Column each), a history of 3 ids sharing item's
  table, 2 dense columns; a binary task masked on part of the rows and a
  regression task."""
  rng = np.random.default_rng(seed)
  vu, vi = 6, 9
  user_effect, item_effect = rng.normal(size=vu), rng.normal(size=vi)
  splits = {}
  for split, n in (('train', 400), ('validation', 200), ('test', 200)):
    user, item = rng.integers(0, vu, n), rng.integers(2, vi, n)
    history = rng.integers(0, vi, (n, 3))  # 0: padding.
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    logit = user_effect[user] + item_effect[item] + dense[:, 0]
    like = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    rating = (logit + rng.normal(size=n)).astype(np.float32)
    mask = np.ones((2, n), np.float32)
    mask[0, rng.random(n) < 0.3] = 0.0
    splits[split] = {
      'dense': dense,
      'sparse': np.column_stack([history, user, item]).astype(np.int32),
      'labels': np.stack([like, rating]),
      'mask': mask,
    }
  hist = Column(vi, feature='history', table='item', pooling='mean')
  return Dataset(
    name='tiny',
    tasks=(Task('like'), Task('rating', kind='regression')),
    dense_names=('d0', 'd1'),
    sparse_names=('h0', 'h1', 'h2', 'user', 'item'),
    vocab_sizes=(
      hist,
      hist,
      hist,
      Column(vu, feature='user'),
      Column(vi, feature='item'),
    ),
    splits=splits,
  )


def _sklearn_matrix(ds, split):
  """The same design built by scikit-learn's encoders."""
  a = ds.splits[split]
  onehot = OneHotEncoder(categories=[range(6), range(9)]).fit_transform(
    a['sparse'][:, 3:]
  )
  history = [set(r) - {0} for r in a['sparse'][:, :3].tolist()]
  multihot = MultiLabelBinarizer(classes=range(9)).fit_transform(history)
  multihot = multihot / np.maximum(multihot.sum(1, keepdims=True), 1)  # Mean.
  return sparse.hstack([onehot, multihot, a['dense']]).tocsr()


def test_design_is_one_hot_ids_multi_hot_history_and_dense():
  ds = _dataset()
  for split in ('train', 'test'):
    ours = exp.one_hot(ds, split).toarray()
    ref = _sklearn_matrix(ds, split).toarray()
    # Ours: history block first (the dataset's column order), then user, item.
    ref = np.hstack([ref[:, 15:24], ref[:, :15], ref[:, 24:]])
    np.testing.assert_array_equal(ours, ref)


def test_logistic_and_ridge_choose_c_on_validation_as_sklearn_does():
  ds = _dataset()
  got = exp.baselines(ds, c_grid=C_GRID)
  x = {s: _sklearn_matrix(ds, s) for s in ('train', 'validation', 'test')}
  for t, (name, kind) in enumerate((('like', 'binary'), ('rating', 'mse'))):
    rows = {s: ds.splits[s]['mask'][t] > 0 for s in x}
    y = {s: ds.splits[s]['labels'][t][rows[s]] for s in x}
    val, test = {}, {}
    for c in C_GRID:
      if kind == 'binary':
        model = LogisticRegression(C=c, solver='liblinear', random_state=0)
        model.fit(x['train'][rows['train']], y['train'])
        pred = {s: model.predict_proba(x[s][rows[s]])[:, 1] for s in x}
        val[c] = roc_auc_score(y['validation'], pred['validation'])
        test[c] = roc_auc_score(y['test'], pred['test'])
      else:
        model = Ridge(alpha=1 / c).fit(x['train'][rows['train']], y['train'])
        pred = {s: model.predict(x[s][rows[s]]) for s in x}
        val[c] = -np.mean((y['validation'] - pred['validation']) ** 2)
        test[c] = np.mean((y['test'] - pred['test']) ** 2)
    best = max(C_GRID, key=val.get)
    assert len(set(np.round(list(val.values()), 6))) > 2  # C matters here.
    r = got[name]
    assert r['logistic']['C'] == best
    assert r['logistic']['test'] == pytest.approx(test[best], abs=1e-6)
    for c in C_GRID:
      assert abs(r['logistic_grid'][repr(c)]) == pytest.approx(
        abs(val[c]), abs=1e-6
      )
  # The prior: AUC 0.5, the MSE of the training mean on the masked rows.
  y_train = ds.splits['train']['labels'][1]
  y_test = ds.splits['test']['labels'][1]
  assert got['rating']['prior']['test'] == pytest.approx(
    np.mean((y_test - y_train.mean()) ** 2), rel=1e-6
  )


def test_gbdt_inputs_ordered_on_train_whole_split_elsewhere():
  ds = _dataset()
  data = exp.task_data(ds, 0)
  x, categorical = exp.gbdt_inputs(ds, data, seed=3)
  # dense 2, history length, user and item natively categorical (<= 255).
  assert categorical == [False, False, False, True, True]
  rows = data['test'][0]
  np.testing.assert_array_equal(
    x['test'][:, 2], (ds.splits['test']['sparse'][rows, :3] != 0).sum(1)
  )
  # A large vocabulary: the target statistic and the training count.
  big = Column(300, feature='item')
  ds2 = Dataset(
    name='tiny2',
    tasks=ds.tasks,
    dense_names=ds.dense_names,
    sparse_names=('item',),
    vocab_sizes=(big,),
    splits={
      s: {**a, 'sparse': a['sparse'][:, 4:5]} for s, a in ds.splits.items()
    },
  )
  x, categorical = exp.gbdt_inputs(ds2, data, seed=3)
  assert categorical == [False] * 4
  (tr, ytr), (te, _) = data['train'], data['test']
  ids_tr = ds2.splits['train']['sparse'][tr, 0]
  order = np.random.default_rng(3).permutation(len(tr))
  np.testing.assert_allclose(
    x['train'][:, 2],
    exp.ordered_target_encoding(ids_tr, ytr, ytr.mean(), order),
  )
  ids_te = ds2.splits['test']['sparse'][te, 0]
  for k in np.unique(ids_te)[:3]:
    seen = ytr[ids_tr == k]
    want = (seen.sum() + 10 * ytr.mean()) / (len(seen) + 10)
    got = x['test'][ids_te == k, 2]
    np.testing.assert_allclose(got, want)
    all_ids = ds2.splits['train']['sparse'][:, 0]
    np.testing.assert_array_equal(
      x['test'][ids_te == k, 3], (all_ids == k).sum()
    )
