"""Structured channel pruning (Network Slimming, Liu et al., 2017): remove whole channels so the network is faster.

Which channels can go is read from the Keras layer graph, not from per-network tables, so every builder in
`models/` is covered by the same rules. A *prunable group* is a convolution followed by its BatchNorm (whose
|gamma| ranks the channels), or several tied by residual adds, whose output channels are consumed only through
layers that keep channels apart:

- followers, sliced with the group: its BatchNorm, activations, padding, pooling, Dropout, Flatten of a 1x1 map,
  depthwise convolutions (a depthwise filter follows its input channel) and their BatchNorms;
- squeeze-and-excite: the squeeze conv's input rows are sliced, and the excite conv's *output* channels (and
  its bias, via the hard-sigmoid back from the `Multiply`) are sliced with the same mask (MobileNetV3);
- channel shuffles (ShuffleNetV1), followed exactly as permutations;
- consumers, where the walk stops: the next Conv2D or Dense has its input channels (rows) sliced; a grouped
  consumer keeps every kept channel in its original group.

Residual adds tie channels: at an `Add` the walk takes in its other inputs and goes upstream from them to the
convolutions that produce them, so every projection of a MobileNetV2/V3 stage (and the stem, where the first
bottleneck adds to it) is one group with one mask, ranked by the sum of their |gamma|. A walk that reaches a
`Concatenate`, a `ChannelSplit`, the model input or output, or an add after a shuffle makes the group unprunable.
What is prunable per network, found by this walk (see the tests): MobileNetV1 every pointwise conv and the stem;
MobileNetV2/V3 every conv followed by a BatchNorm (expansions alone, projections per residual stage); ShuffleNetV2
each branch's first 1x1 conv, the stem and conv5 (the branches' outputs meet in concats and splits);
ShuffleNetV1 the bottleneck (first grouped 1x1) of every unit, pruned equally per group so the grouped
convolutions and the shuffle still line up (its stride-1 adds sit on the stage's concat output).

The pruned network is the original's functional graph with per-layer channel counts (`with_channels`, which
`models.registry.build(..., channels=...)` applies to a builder's network): same layer classes, names and
configurations with smaller `filters`, so it is an ordinary Keras model that can be saved, rebuilt from its
counts, pruned again, quantization-aware trained and converted like any other. Kept
weights are copied: conv kernels (output channels, and the next layers' input channels), depthwise kernels,
BatchNorm gamma/beta/moving mean/variance, SE convs and Dense rows. Removing a channel is exact when its
BatchNorm output is zero (gamma = beta = 0) and its activation maps zero to zero (ReLU, ReLU6, hard-swish); a
channel with a small gamma but nonzero beta contributes a near-constant that fine-tuning absorbs.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import tf_keras as keras

from models import complexity
from models.choices import PRUNE_CRITERIA
from models.layers import ChannelShuffle, HardSigmoid, HardSwish

DEFAULT_MIN_KEEP_FRACTION = 0.1
DEFAULT_CHANNEL_MULTIPLE = 8
# How channels are ranked for removal. `gamma`: |gamma| alone (Network Slimming). `gamma_per_mac`: |gamma| divided by
# the multiply-adds one channel of its group costs, the value-per-cost order of a knapsack: a MAC budget is then met
# by removing less |gamma|, and channels on large feature maps, where a phone-sized input spends its time, go first
# (a MobileNetV2 channel of the 56x56 stage costs ~10x one of the 7x7 stage). Where the L1 training has driven the
# unneeded channels' gamma to ~0 both orders remove nearly the same channels (README, channel pruning).
CRITERIA = PRUNE_CRITERIA
DEFAULT_CRITERION = "gamma"

# Layers that keep every channel separate and carry no per-channel weights: the mask passes through.
_PASS_THROUGH = (
    keras.layers.ReLU,
    keras.layers.Activation,
    HardSwish,
    HardSigmoid,
    keras.layers.Dropout,
    keras.layers.ZeroPadding2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
)
# Weightless element-wise activations: between an SE excite conv and its Multiply, and walked back through from
# an add to the convolutions that produce its inputs.
_ELEMENTWISE = (keras.layers.ReLU, keras.layers.Activation, HardSwish, HardSigmoid)


class ChannelPruningError(ValueError):
    """Channel pruning cannot run with these arguments or on this model; the message says what is allowed."""


@dataclasses.dataclass(frozen=True)
class Site:
    """One layer a group's channels reach: which axis of its weights follows, and the shuffles on the way."""

    layer: str
    role: str  # "output" (producer / SE excite conv), "follow" (BatchNorm, depthwise), "input" (next conv/dense)
    shuffles: tuple[int, ...]
    groups: int = 1


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Convolutions whose output channels share one mask, and every layer those channels reach.

    Usually one convolution and its BatchNorm. Projections tied by residual adds form one group with several
    `convs` (MobileNetV2/V3: every projection of a stage, and the stem where the first bottleneck adds to it).
    `conv` (the first of `convs` in the model) names the group; `batch_norms` follow `convs` one to one.
    """

    conv: str
    convs: tuple[str, ...]
    batch_norms: tuple[str, ...]
    channels: int
    sites: tuple[Site, ...]

    @property
    def unit(self) -> int:
        """Kept counts must be multiples of this: every group count and shuffle on the way divides them."""
        unit = 1
        for site in self.sites:
            for value in (site.groups, *site.shuffles):
                unit = math.lcm(unit, value)
        return unit


# ---------------------------------------------------------------------------------------------------- graph walk


def _flat(tensors) -> list:
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _consumers(model: keras.Model) -> dict[int, list[keras.layers.Layer]]:
    consumers: dict[int, list[keras.layers.Layer]] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in _flat(layer.input):
            consumers.setdefault(id(tensor), []).append(layer)
    return consumers


def _producer(tensor) -> keras.layers.Layer:
    return tensor._keras_history.layer


def _is_depthwise(layer) -> bool:
    return isinstance(layer, keras.layers.DepthwiseConv2D) and layer.depth_multiplier == 1


def _is_conv(layer) -> bool:
    return isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D)


class _Unprunable(Exception):
    pass


class _Walk:
    """The channel space of one convolution's output: every tensor that must keep exactly its channels.

    Downstream, the space flows through followers and pass-through layers and stops at consumers (the next
    conv's input rows). At an `Add` every other input joins the space, so the walk also goes upstream from it,
    through followers and activations, to the convolutions that produce it: they become producers of the same
    group. Shuffles are followed downstream only; an add reached after a shuffle, a concat, a split, the model
    input or output, or an unknown layer makes the space unprunable.
    """

    def __init__(self, model: keras.Model, consumers: dict[int, list]):
        self.consumers = consumers
        self.output_ids = {id(t) for t in _flat(model.outputs)}
        self.sites: dict[tuple[str, str], Site] = {}
        self.convs: list[str] = []
        self.batch_norms: list[str] = []
        self.shuffles_of: dict[int, tuple[int, ...]] = {}  # visited tensors and the shuffles on the way to them
        self.pending: list = []
        self.multiplies: set[str] = set()

    def site(self, layer, role: str, shuffles: tuple[int, ...], groups: int = 1) -> None:
        self.sites.setdefault((layer.name, role), Site(layer.name, role, shuffles, groups))

    def enter(self, tensor, shuffles: tuple[int, ...]) -> bool:
        """Marks `tensor` part of the space (to be walked downstream); False if it already was."""
        if id(tensor) in self.shuffles_of:
            if self.shuffles_of[id(tensor)] != shuffles:
                raise _Unprunable("one tensor reached with two channel orders")
            return False
        if id(tensor) in self.output_ids:
            raise _Unprunable("model output")
        self.shuffles_of[id(tensor)] = shuffles
        self.pending.append(tensor)
        return True

    def add_producer(self, conv) -> None:
        following = self.consumers.get(id(conv.output), [])
        if len(following) != 1 or not isinstance(following[0], keras.layers.BatchNormalization):
            raise _Unprunable(f"{conv.name} has no BatchNorm of its own to rank its channels")
        self.site(conv, "output", (), conv.groups)
        self.convs.append(conv.name)
        self.batch_norms.append(following[0].name)
        self.enter(conv.output, ())

    def upstream(self, tensor) -> None:
        """An add's other input joins the space: walk back to the convolutions that produce it."""
        if not self.enter(tensor, ()):
            return
        layer = _producer(tensor)
        if _is_conv(layer):
            self.add_producer(layer)
        elif isinstance(layer, keras.layers.BatchNormalization) or _is_depthwise(layer):
            self.site(layer, "follow", ())
            self.upstream(layer.input)
        elif isinstance(layer, _ELEMENTWISE):
            self.upstream(layer.input)
        elif isinstance(layer, keras.layers.Add):
            for other in _flat(layer.input):
                self.upstream(other)
        else:  # the model input, a concat, a split, a shuffle (not followed backwards), anything unknown
            raise _Unprunable(layer.name)

    def downstream(self, tensor) -> None:
        shuffles = self.shuffles_of[id(tensor)]
        for layer in self.consumers.get(id(tensor), []):
            if isinstance(layer, keras.layers.BatchNormalization) or _is_depthwise(layer):
                self.site(layer, "follow", shuffles)
                self.enter(layer.output, shuffles)
            elif isinstance(layer, _PASS_THROUGH) or (
                isinstance(layer, keras.layers.Flatten) and tuple(layer.input.shape[1:-1]) in ((), (1, 1))
            ):
                self.enter(layer.output, shuffles)
            elif isinstance(layer, ChannelShuffle):
                self.enter(layer.output, shuffles + (layer.groups,))
            elif _is_conv(layer):
                self.site(layer, "input", shuffles, layer.groups)
            elif isinstance(layer, keras.layers.Dense):
                self.site(layer, "input", shuffles)
            elif isinstance(layer, keras.layers.Multiply):
                if layer.name in self.multiplies:
                    raise _Unprunable("multiply reached twice")
                self.multiplies.add(layer.name)
                for other in _flat(layer.input):
                    if other is not tensor:
                        excite = _excite_conv(self.consumers, other)
                        self.site(excite, "output", shuffles)
                self.enter(layer.output, shuffles)
            elif isinstance(layer, keras.layers.Add) and not shuffles:
                self.enter(layer.output, ())
                for other in _flat(layer.input):
                    self.upstream(other)
            else:  # Concatenate, ChannelSplit, an add after a shuffle, anything unknown: tied to other channels
                raise _Unprunable(layer.name)

    def group(self, channels: int) -> ChannelGroup:
        while self.pending:
            self.downstream(self.pending.pop())
        return ChannelGroup(self.convs[0], tuple(self.convs), tuple(self.batch_norms), channels,
                            tuple(self.sites.values()))


def _excite_conv(consumers, tensor) -> keras.layers.Layer:
    """Back from a Multiply's gate through weightless element-wise layers to the conv whose outputs must follow."""
    while True:
        if len(consumers.get(id(tensor), [])) != 1:
            raise _Unprunable("gate used elsewhere")
        layer = _producer(tensor)
        if _is_conv(layer) and layer.groups == 1:
            return layer
        if not isinstance(layer, _ELEMENTWISE):
            raise _Unprunable(layer.name)
        tensor = layer.input


def prunable_groups(model: keras.Model) -> list[ChannelGroup]:
    """Every set of convolutions whose output channels can be removed, with the layers that must follow them."""
    consumers = _consumers(model)
    groups, claimed = [], set()
    for layer in model.layers:
        if not _is_conv(layer) or layer.name in claimed:
            continue
        walk = _Walk(model, consumers)
        try:
            walk.add_producer(layer)
            group = walk.group(layer.filters)
        except _Unprunable:
            continue
        claimed.update(group.convs)
        groups.append(group)
    return groups


# ------------------------------------------------------------------------------------------ channel bookkeeping


def _shuffle(labels: np.ndarray, groups: int) -> np.ndarray:
    """ChannelShuffle on a label vector: output channel j * groups + i is input channel i * (C / groups) + j."""
    return labels.reshape(groups, -1).T.reshape(-1)


def _labels(channels: int, shuffles: Sequence[int]) -> np.ndarray:
    labels = np.arange(channels)
    for groups in shuffles:
        labels = _shuffle(labels, groups)
    return labels


def _cells(group: ChannelGroup, channels: int) -> np.ndarray:
    """For each producer channel, a cell id: its group index in every grouped layer it reaches (row per channel)."""
    columns = []
    for site in group.sites:
        if site.groups > 1:
            position = np.argsort(_labels(channels, site.shuffles))  # position of each producer channel
            columns.append(position // (channels // site.groups))
    if not columns:
        return np.zeros((channels, 1), dtype=int)
    return np.stack(columns, axis=1)


def _choose(group: ChannelGroup, scores: np.ndarray, count: int) -> np.ndarray | None:
    """The `count` best channels by score such that each kept channel stays in its group everywhere, or None."""
    old_cells = _cells(group, group.channels)
    new_cells = _cells(group, count)
    keep = []
    for cell in np.unique(new_cells, axis=0):
        quota = int(np.sum(np.all(new_cells == cell, axis=1)))
        members = np.flatnonzero(np.all(old_cells == cell, axis=1))
        if quota > len(members):
            return None
        keep.extend(members[np.argsort(-scores[members], kind="stable")[:quota]])
    keep = np.sort(np.asarray(keep, dtype=int))
    return keep if _consistent(group, keep) else None


def _source(channels: int, keep: np.ndarray, shuffles: Sequence[int]) -> np.ndarray:
    """For each channel of the pruned tensor at a site, the channel of the original tensor it comes from."""
    old_position = np.argsort(_labels(channels, shuffles))
    return old_position[keep[_labels(len(keep), shuffles)]]


def removed_at(group: ChannelGroup, site: Site, keep: np.ndarray) -> np.ndarray:
    """Channel indices of the tensor at `site` that pruning `group` down to `keep` removes."""
    removed = np.setdiff1d(np.arange(group.channels), keep)
    return np.sort(np.argsort(_labels(group.channels, site.shuffles))[removed])


def silence_removed_channels(model: keras.Model, keep: dict[str, np.ndarray]) -> None:
    """Set gamma and beta to zero for every channel `keep` removes, in every BatchNorm its group reaches.

    Those channels then output exactly zero (ReLU, ReLU6, hard-swish map 0 to 0), so pruning them changes
    nothing: the check that pruning is lossless where it should be.
    """
    for group in prunable_groups(model):
        kept = np.asarray(keep.get(group.conv, np.arange(group.channels)))
        for site in group.sites:
            layer = model.get_layer(site.layer)
            if isinstance(layer, keras.layers.BatchNormalization):
                weights = layer.get_weights()
                for index in (0, 1):  # gamma, beta (center and scale are on in every builder here)
                    weights[index][removed_at(group, site, kept)] = 0.0
                layer.set_weights(weights)


def _consistent(group: ChannelGroup, keep: np.ndarray) -> bool:
    for site in group.sites:
        if site.groups > 1:
            source = _source(group.channels, keep, site.shuffles)
            if np.any(source // (group.channels // site.groups) != np.arange(len(keep)) // (len(keep) // site.groups)):
                return False
    return True


def gammas(model: keras.Model, groups: Sequence[ChannelGroup]) -> dict[str, np.ndarray]:
    """|gamma| of each group's BatchNorm, the Network Slimming channel score.

    For projections tied by residual adds, the sum over their BatchNorms: a channel of the residual stream is the
    sum of their outputs, so its scale is bounded by the sum, and it can go only if it is small in all of them.
    """
    return {g.conv: sum(np.abs(model.get_layer(bn).gamma.numpy()) for bn in g.batch_norms) for g in groups}


def macs_per_channel(
    model: keras.Model, groups: Sequence[ChannelGroup], layer_macs: dict[str, int]
) -> dict[str, float]:
    """Multiply-adds that removing one channel of each group saves: a layer's count is linear in the channels of
    each group it belongs to (`macs_after`), so it is the sum of its sites' layers' counts over the group's size."""
    return {g.conv: sum(layer_macs[site.layer] for site in g.sites
                        if not isinstance(model.get_layer(site.layer), keras.layers.BatchNormalization)) / g.channels
            for g in groups}


def channel_scores(model: keras.Model, groups: Sequence[ChannelGroup], criterion: str,
                   layer_macs: dict[str, int]) -> dict[str, np.ndarray]:
    """Per group, the score of each channel under `criterion` (one of CRITERIA): the lowest go first."""
    scores = gammas(model, groups)
    if criterion == "gamma_per_mac":
        cost = macs_per_channel(model, groups, layer_macs)
        scores = {conv: score / max(cost[conv], 1.0) for conv, score in scores.items()}
    return scores


# ------------------------------------------------------------------------------------------------- selection


def _allowed_counts(group: ChannelGroup, min_keep_fraction: float, channel_multiple: int) -> list[int]:
    """Kept counts a group may take, ascending: multiples of its unit (and of `channel_multiple` where it fits)."""
    unit = group.unit
    step = math.lcm(unit, channel_multiple) if group.channels >= 2 * math.lcm(unit, channel_multiple) else unit
    floor = max(unit, math.ceil(min_keep_fraction * group.channels))
    counts = [n for n in range(step, group.channels, step) if n >= floor] + [group.channels]
    return counts


def _wanted_counts(groups: Sequence[ChannelGroup], scores: dict[str, np.ndarray], removed: int) -> dict[str, int]:
    """Per group, the channels left after removing the `removed` lowest scores over all groups (ties: stable)."""
    owners = np.concatenate([np.full(g.channels, index) for index, g in enumerate(groups)])
    order = np.argsort(np.concatenate([scores[g.conv] for g in groups]), kind="stable")
    dropped = np.bincount(owners[order[:removed]], minlength=len(groups))
    return {g.conv: g.channels - int(dropped[index]) for index, g in enumerate(groups)}


def keep_for_counts(
    groups: Sequence[ChannelGroup],
    scores: dict[str, np.ndarray],
    wanted: dict[str, int],
    min_keep_fraction: float = DEFAULT_MIN_KEEP_FRACTION,
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE,
) -> dict[str, np.ndarray]:
    """Kept channel indices per group: its `wanted` best by score, raised to the floor and rounded up."""
    keep = {}
    for group in groups:
        for count in _allowed_counts(group, min_keep_fraction, channel_multiple):
            if count < wanted[group.conv]:
                continue
            chosen = _choose(group, scores[group.conv], count)
            if chosen is not None:
                keep[group.conv] = chosen
                break
        else:
            keep[group.conv] = np.arange(group.channels)
    return keep


def select_channels(
    model: keras.Model,
    prune_ratio: float | None = None,
    target_macs: int | None = None,
    min_keep_fraction: float = DEFAULT_MIN_KEEP_FRACTION,
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE,
    criterion: str = DEFAULT_CRITERION,
) -> dict[str, np.ndarray]:
    """Kept channels per prunable conv from one global ranking (`criterion`), by `prune_ratio` or `target_macs`.

    `prune_ratio` is the fraction of prunable channels (over all groups) with the lowest scores (a global
    threshold; ties broken by position) to remove; the per-layer floor (`min_keep_fraction`, never below one group
    unit) and rounding up to multiples of `channel_multiple` (where a layer has at least twice that) keep a little
    more. `target_macs` searches the global cut for the largest network whose analytic MACs (models.complexity)
    are at most the target. `criterion` (CRITERIA) orders the channels: |gamma|, or |gamma| per MAC it costs.
    """
    if (prune_ratio is None) == (target_macs is None):
        raise ChannelPruningError("Give exactly one of prune_ratio (a fraction in (0, 1)) or target_macs.")
    if not 0.0 <= min_keep_fraction < 1.0:
        raise ChannelPruningError(f"min_keep_fraction must be in [0, 1), got {min_keep_fraction!r}.")
    if not isinstance(channel_multiple, int) or channel_multiple < 1:
        raise ChannelPruningError(f"channel_multiple must be a positive int, got {channel_multiple!r}.")
    if criterion not in CRITERIA:
        raise ChannelPruningError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")
    if prune_ratio is not None and (isinstance(prune_ratio, bool) or not 0.0 < float(prune_ratio) < 1.0):
        raise ChannelPruningError(f"prune_ratio must be a fraction strictly between 0 and 1, got {prune_ratio!r}.")
    groups = prunable_groups(model)
    if not groups:
        raise ChannelPruningError(f"{model.name} has no prunable channels (no conv + BatchNorm outside add/concat).")
    layer_macs = {row.name: row.macs for row in complexity.analyze(model).layers}
    scores = channel_scores(model, groups, criterion, layer_macs)
    total = sum(g.channels for g in groups)
    options = dict(min_keep_fraction=min_keep_fraction, channel_multiple=channel_multiple)

    def keep_after(removed: int) -> dict[str, np.ndarray]:
        return keep_for_counts(groups, scores, _wanted_counts(groups, scores, removed), **options)

    if prune_ratio is not None:
        return keep_after(int(round(prune_ratio * total)))

    current = sum(layer_macs.values())
    if isinstance(target_macs, bool) or not isinstance(target_macs, (int, np.integer)) or not 0 < target_macs < current:
        raise ChannelPruningError(
            f"target_macs must be a positive int below the model's {current:,} MACs, got {target_macs!r}."
        )
    smallest = keep_after(total)
    smallest_macs = macs_after(model, smallest, groups, layer_macs)
    if smallest_macs > target_macs:
        raise ChannelPruningError(
            f"target_macs={target_macs:,} is unreachable: pruning every prunable layer to its floor "
            f"(min_keep_fraction={min_keep_fraction:g}) leaves {smallest_macs:,} MACs. Ask for at least that."
        )
    # Binary search for the fewest removed channels that meet the target: removing more never adds MACs.
    low, high, best = 0, total, smallest  # invariant: removing `high` meets the target, removing `low` does not
    while high - low > 1:
        middle = (low + high) // 2
        keep = keep_after(middle)
        if macs_after(model, keep, groups, layer_macs) <= target_macs:
            high, best = middle, keep
        else:
            low = middle
    return best


def macs_after(
    model: keras.Model, keep: dict[str, np.ndarray], groups: Sequence[ChannelGroup] | None = None,
    layer_macs: dict[str, int] | None = None,
) -> int:
    """Analytic MACs of the network `keep` would leave, without building it.

    Only convolutions and Dense layers have multiply-adds (models.complexity), and each one's count is
    proportional to its output channels and its input channels per group (a depthwise conv's to its channels),
    so scaling each layer's count by the kept fractions at its sites is exact (the tests check it against
    `complexity.analyze` of the rebuilt network).
    """
    groups = prunable_groups(model) if groups is None else groups
    if layer_macs is None:
        layer_macs = {row.name: row.macs for row in complexity.analyze(model).layers}
    scale = {name: 1.0 for name in layer_macs}
    for group in groups:
        fraction = len(keep.get(group.conv, range(group.channels))) / group.channels
        for site in group.sites:
            if not isinstance(model.get_layer(site.layer), keras.layers.BatchNormalization):
                scale[site.layer] *= fraction
    return int(round(sum(macs * scale[name] for name, macs in layer_macs.items())))


# --------------------------------------------------------------------------------------------------- rebuild


def with_channels(model: keras.Model, channels: dict[str, int]) -> keras.Model:
    """`model`'s network (fresh weights) with `channels` output channels for the named prunable convolutions.

    Keys are producer convolutions (`channel_counts` of a pruned model gives them all); convs tied by a residual
    add must get the same count, and an SE excite conv follows the channels it gates. Counts must be multiples of
    the group's unit (its convolution groups and shuffles) and at most the original's.
    """
    groups = prunable_groups(model)
    group_of = {conv: group for group in groups for conv in group.convs}
    unknown = sorted(set(channels) - set(group_of))
    if unknown:
        raise ChannelPruningError(f"Not prunable in {model.name}: {unknown}; prunable: {sorted(group_of)}.")
    filters: dict[str, int] = {}
    for group in groups:
        counts = {channels[conv] for conv in group.convs if conv in channels}
        if len(counts) > 1:
            raise ChannelPruningError(
                f"{list(group.convs)} are tied by residual adds and need one channel count; got {sorted(counts)}."
            )
        count = counts.pop() if counts else group.channels
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 < count <= group.channels \
                or count % group.unit:
            raise ChannelPruningError(
                f"{group.conv}: channel count must be a positive multiple of {group.unit} up to {group.channels}, "
                f"got {count!r}."
            )
        for site in group.sites:
            if site.role == "output":
                filters[site.layer] = int(count)

    def clone(layer):
        config = layer.get_config()
        if layer.name in filters:
            config["filters"] = filters[layer.name]
        if isinstance(layer, keras.layers.BatchNormalization):
            config["gamma_regularizer"] = None  # sparsity training's L1 ends with pruning
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _gather_grouped_input(kernel: np.ndarray, source: np.ndarray, groups: int) -> np.ndarray:
    """Input channels of a grouped conv kernel (kh, kw, C/groups, out): each kept channel stays in its group."""
    old_per_group = kernel.shape[2]
    new_per_group = len(source) // groups
    out_per_group = kernel.shape[3] // groups
    result = np.empty(kernel.shape[:2] + (new_per_group, kernel.shape[3]), kernel.dtype)
    for position, old in enumerate(source):
        group = position // new_per_group
        if old // old_per_group != group:
            raise ChannelPruningError("internal: a kept channel left its convolution group")
        outputs = slice(group * out_per_group, (group + 1) * out_per_group)
        result[:, :, position % new_per_group, outputs] = kernel[:, :, old % old_per_group, outputs]
    return result


def prune_channels(model: keras.Model, keep: dict[str, np.ndarray]) -> keras.Model:
    """The network with only the `keep` channels of each prunable conv, carrying the original's kept weights."""
    groups = prunable_groups(model)
    by_name = {g.conv: g for g in groups}
    unknown = sorted(set(keep) - set(by_name))
    if unknown:
        raise ChannelPruningError(f"Not prunable in {model.name}: {unknown}; prunable: {sorted(by_name)}.")
    keep = {name: np.sort(np.asarray(keep.get(name, np.arange(g.channels)), dtype=int)) for name, g in by_name.items()}
    for name, group in by_name.items():
        kept = keep[name]
        if len(kept) == 0 or kept[0] < 0 or kept[-1] >= group.channels or len(np.unique(kept)) != len(kept):
            raise ChannelPruningError(f"{name}: keep must be distinct channel indices in [0, {group.channels}).")
        if len(kept) % group.unit or not _consistent(group, kept):
            raise ChannelPruningError(
                f"{name}: {len(kept)} kept channels do not keep its groups equal (need a multiple of {group.unit} "
                f"chosen equally per group); use select_channels."
            )
    # Per layer: source indices along its output axis ("output"/"follow") and its input axis ("input").
    output_source: dict[str, np.ndarray] = {}
    input_source: dict[str, tuple[np.ndarray, int]] = {}
    for name, group in by_name.items():
        if len(keep[name]) == group.channels:
            continue
        for site in group.sites:
            source = _source(group.channels, keep[name], site.shuffles)
            if site.role == "input":
                input_source[site.layer] = (source, site.groups)
            else:
                output_source[site.layer] = source
    pruned = with_channels(model, {conv: len(keep[g.conv]) for g in groups for conv in g.convs})
    for layer in pruned.layers:
        original = model.get_layer(layer.name)
        weights = original.get_weights()
        if not weights:
            continue
        out = output_source.get(layer.name)
        into = input_source.get(layer.name)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            if out is not None:
                weights = [weights[0][:, :, out, :], *(w[out] for w in weights[1:])]
        elif isinstance(layer, keras.layers.Conv2D):
            kernel = weights[0]
            if out is not None:
                kernel = kernel[..., out]
                weights[1:] = [w[out] for w in weights[1:]]
            if into is not None:
                source, groups_count = into
                kernel = kernel[:, :, source, :] if groups_count == 1 else _gather_grouped_input(kernel, source, groups_count)
            weights[0] = kernel
        elif isinstance(layer, keras.layers.Dense):
            if into is not None:
                weights[0] = weights[0][into[0]]
        elif isinstance(layer, keras.layers.BatchNormalization):
            if out is not None:
                weights = [w[out] for w in weights]
        layer.set_weights(weights)
    return pruned


def channel_counts(model: keras.Model) -> dict[str, int]:
    """Output channels of every prunable conv: the per-layer channel counts a pruned network was built with."""
    return {conv: g.channels for g in prunable_groups(model) for conv in g.convs}


def slim(
    model: keras.Model,
    prune_ratio: float | None = None,
    target_macs: int | None = None,
    min_keep_fraction: float = DEFAULT_MIN_KEEP_FRACTION,
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE,
    criterion: str = DEFAULT_CRITERION,
) -> keras.Model:
    """Select channels by a global ranking (`prune_ratio` or `target_macs`) and rebuild without the rest."""
    keep = select_channels(model, prune_ratio, target_macs, min_keep_fraction, channel_multiple, criterion)
    return prune_channels(model, keep)
