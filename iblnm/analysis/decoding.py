"""Decoding the target-NM of a recording from its response feature vector.

Model: L1-penalised multinomial logistic regression (``saga``) with balanced class weights.
Inside every training set, missing features are imputed with the training mean and every
feature is z-scored with the training mean and SD, so that no statistic of the held-out
subject leaks into the model. Cross-validation is leave-one-subject-out (LOSO); in each
outer fold the inverse regularisation strength C is chosen by an inner grouped
cross-validation over the training subjects (balanced accuracy).
"""

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
RESULT_KEYS = {
    'predictions',
    'accuracy',
    'balanced_accuracy',
    'chance',
    'confusion',
    'coefficients',
    'C',
    'fold_C',
    'classes',
}


def make_model(C=1.0, normalize=True, seed=0):
    """Imputer → (StandardScaler) → L1 logistic regression with balanced class weights."""
    steps = [SimpleImputer(strategy='mean', keep_empty_features=True)]
    steps += [StandardScaler()] if normalize else []
    steps.append(
        LogisticRegression(
            C=C,
            l1_ratio=1.0,
            solver='saga',
            class_weight='balanced',
            max_iter=5000,
            tol=1e-3,
            random_state=seed,
        )
    )
    return make_pipeline(*steps)


def _balanced_accuracy(y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # a held-out subject holds one class
        return balanced_accuracy_score(y_true, np.asarray(y_pred).astype(str))


def _fit(model, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        return model.fit(x, y)


def select_C(x, y, groups, Cs=DEFAULT_CS, n_splits=3, normalize=True, seed=0):  # noqa: N802
    """Choose C by grouped K-fold CV (balanced accuracy) over the groups of a training set.

    Parameters
    ----------
    x : ndarray, shape (n_samples, n_features)
    y : ndarray, shape (n_samples,)
    groups : ndarray, shape (n_samples,)
        Subject of each sample; folds never split a subject.
    Cs : sequence of float
    n_splits : int
        At most this many folds (fewer when there are fewer subjects).

    Returns
    -------
    float
        The best C (ties go to the smallest, i.e. the sparsest model); the middle of ``Cs``
        when fewer than 2 subjects leave nothing to cross-validate.
    """
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        return Cs[len(Cs) // 2]
    scores = np.zeros(len(Cs))
    for train, test in GroupKFold(n_splits=min(n_splits, n_groups)).split(x, y, groups):
        if len(np.unique(y[train])) < 2:
            continue
        for k, C in enumerate(Cs):
            model = _fit(make_model(C, normalize, seed), x[train], y[train])
            scores[k] += _balanced_accuracy(y[test], model.predict(x[test]))
    return Cs[int(np.argmax(scores))]


def loso_predictions(x, y, groups, C=None, Cs=DEFAULT_CS, normalize=True, seed=0):
    """Leave-one-subject-out predictions.

    Parameters
    ----------
    x, y, groups : ndarrays, shapes (n, n_features), (n,), (n,)
    C : float or dict, optional
        Fixed C, or ``{held-out subject: C}`` (e.g. the ``fold_C`` of an earlier nested run);
        default: chosen per outer fold by :func:`select_C` on the training subjects.

    Returns
    -------
    predictions : ndarray, shape (n,)
    fold_C : dict
        Held-out subject -> C used.
    """
    predictions = np.empty(len(y), dtype=object)
    fold_C = {}
    for train, test in LeaveOneGroupOut().split(x, y, groups):
        held_out = groups[test][0]
        if isinstance(C, dict):
            c = C[held_out]
        else:
            c = (
                C
                if C is not None
                else select_C(x[train], y[train], groups[train], Cs, 3, normalize, seed)
            )
        fold_C[held_out] = c
        if len(np.unique(y[train])) < 2:
            predictions[test] = y[train][0]
            continue
        predictions[test] = _fit(make_model(c, normalize, seed), x[train], y[train]).predict(
            x[test]
        )
    return predictions, fold_C


def decode_target_nm(features, labels, groups, Cs=DEFAULT_CS, normalize=True, seed=0):
    """LOSO decoding of class labels from features.

    Parameters
    ----------
    features : pandas.DataFrame or ndarray, shape (n_recordings, n_features)
        NaN allowed (imputed with the training mean inside each fold).
    labels : array-like, shape (n_recordings,)
        Target-NM of each recording.
    groups : array-like, shape (n_recordings,)
        Subject of each recording.
    Cs : sequence of float
        Grid of inverse L1 strengths for the inner search.

    Returns
    -------
    dict
        Keys :data:`RESULT_KEYS`: ``predictions`` (ndarray), ``accuracy`` and
        ``balanced_accuracy`` (LOSO, 0-1), ``chance`` (1 / n_classes, the balanced-accuracy
        chance level), ``confusion`` (DataFrame counts, rows true, columns predicted),
        ``coefficients`` (DataFrame classes x features, refit on all data with ``C``),
        ``C`` (chosen on all data), ``fold_C`` and ``classes``.

    Raises
    ------
    ValueError
        Fewer than 2 classes.
    """
    names = list(features.columns) if isinstance(features, pd.DataFrame) else None
    x = np.asarray(features, dtype=float)
    y, groups = np.asarray(labels).astype(str), np.asarray(groups).astype(str)
    classes = sorted(np.unique(y))
    if len(classes) < 2:
        raise ValueError(f'decoding needs at least 2 classes, got {len(classes)}')
    predictions, fold_C = loso_predictions(x, y, groups, None, Cs, normalize, seed)
    best_C = select_C(x, y, groups, Cs, 3, normalize, seed)
    model = _fit(make_model(best_C, normalize, seed), x, y)
    coef = model[-1].coef_
    coef = np.vstack([-coef[0], coef[0]]) if coef.shape[0] == 1 else coef
    names = names or [f'x{i}' for i in range(x.shape[1])]
    return {
        'predictions': predictions,
        'accuracy': float(np.mean(predictions == y)),
        'balanced_accuracy': float(_balanced_accuracy(y, predictions)),
        'chance': 1.0 / len(classes),
        'confusion': pd.DataFrame(
            confusion_matrix(y, predictions.astype(str), labels=classes),
            index=pd.Index(classes, name='true'),
            columns=pd.Index(classes, name='predicted'),
        ),
        'coefficients': pd.DataFrame(coef, index=model[-1].classes_, columns=names),
        'C': best_C,
        'fold_C': fold_C,
        'classes': classes,
    }


def feature_unique_contribution(
    features, labels, groups, feature_groups, C, normalize=True, seed=0
):
    """Drop in LOSO balanced accuracy when a group of features is left out.

    Parameters
    ----------
    features : pandas.DataFrame, shape (n_recordings, n_features)
    labels, groups : array-like, shape (n_recordings,)
    feature_groups : dict
        ``{name: [columns]}``; each group is removed in turn.
    C : float or dict
        Regularisation: a fixed C, or ``{held-out subject: C}``. Pass the ``fold_C`` of the
        nested decoder so that no C was chosen with the held-out subject's data and the
        full model's accuracy is the decoder's own (no inner search is repeated per group).

    Returns
    -------
    pandas.DataFrame
        One row per group, sorted by decreasing ``delta``: ``feature_group``,
        ``n_features``, ``balanced_accuracy_full``, ``balanced_accuracy_without`` and
        ``delta`` = full - without (positive: the group carries unique information).
    """
    y, groups = np.asarray(labels).astype(str), np.asarray(groups).astype(str)

    def score(frame):
        pred, _ = loso_predictions(
            frame.to_numpy(float), y, groups, C, normalize=normalize, seed=seed
        )
        return _balanced_accuracy(y, pred)

    full = score(features)
    rows = []
    for name, columns in feature_groups.items():
        kept = features.drop(columns=[c for c in columns if c in features.columns])
        without = score(kept) if kept.shape[1] else 1.0 / len(np.unique(y))
        rows.append(
            {
                'feature_group': name,
                'n_features': len(columns),
                'balanced_accuracy_full': full,
                'balanced_accuracy_without': without,
                'delta': full - without,
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values('delta', ascending=False, ignore_index=True) if len(out) else out


def factor_groups(columns):
    """Feature groups by factor level of condition labels ``event_cX_side_outcome``.

    Returns ``{'event=stimOn': [...], 'contrast=25': [...], 'side=contra': [...],
    'outcome=correct': [...]}`` (only levels present).
    """
    out = {}
    for col in columns:
        parts = str(col).split('_')
        if len(parts) != 4:
            out.setdefault(f'feature={col}', []).append(col)
            continue
        event, contrast, side, outcome = parts
        for key in (
            f'event={event}',
            f'contrast={contrast[1:]}',
            f'side={side}',
            f'outcome={outcome}',
        ):
            out.setdefault(key, []).append(col)
    return out


class TargetNMDecoder:
    """LOSO decoder of target-NM from response features (see :func:`decode_target_nm`).

    Parameters
    ----------
    features : pandas.DataFrame, shape (n_recordings, n_features)
    labels : array-like, shape (n_recordings,)
        Target-NM per recording.
    subjects : array-like, shape (n_recordings,)
    Cs : sequence of float
    normalize : bool
        z-score features within folds.

    Attributes (after :meth:`fit`)
    ------------------------------
    accuracy, balanced_accuracy, chance : float
    confusion : pandas.DataFrame (true x predicted counts)
    coefficients : pandas.DataFrame (classes x features)
    predictions : pandas.Series (recording -> predicted label)
    contributions : pandas.DataFrame (after :meth:`unique_contribution`)
    """

    def __init__(self, features, labels, subjects, Cs=DEFAULT_CS, normalize=True, seed=0):
        self.features = features
        self.labels = np.asarray(labels).astype(str)
        self.subjects = np.asarray(subjects).astype(str)
        self.Cs, self.normalize, self.seed = tuple(Cs), normalize, seed
        self.accuracy = self.balanced_accuracy = self.chance = None
        self.confusion = self.coefficients = self.predictions = self.contributions = None
        self.C = None

    def fit(self):
        """Run the LOSO decoding; fills the result attributes and returns self."""
        result = decode_target_nm(
            self.features, self.labels, self.subjects, self.Cs, self.normalize, self.seed
        )
        self.accuracy, self.balanced_accuracy = result['accuracy'], result['balanced_accuracy']
        self.chance, self.confusion = result['chance'], result['confusion']
        self.coefficients, self.C, self.fold_C = (
            result['coefficients'],
            result['C'],
            result['fold_C'],
        )
        self.predictions = pd.Series(
            result['predictions'], index=self.features.index, name='predicted'
        )
        return self

    @property
    def recall(self):
        """Per-class recall (fraction of each true class predicted correctly)."""
        counts = self.confusion.to_numpy()
        return pd.Series(np.diag(counts) / counts.sum(axis=1), index=self.confusion.index)

    def unique_contribution(self, feature_groups=None):
        """Balanced-accuracy drop per left-out feature group (default :func:`factor_groups`)."""
        if self.C is None:
            self.fit()
        groups = feature_groups or factor_groups(self.features.columns)
        self.contributions = feature_unique_contribution(
            self.features,
            self.labels,
            self.subjects,
            groups,
            self.fold_C,
            self.normalize,
            self.seed,
        )
        return self.contributions
