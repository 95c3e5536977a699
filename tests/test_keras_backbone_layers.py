"""A pretrained backbone's own layers (stem, MBConv blocks, top) with per-layer trainable flags: Keras's
fine-tuning recipe, the summary's trainable count, frozen batch norm statistics, files."""
import numpy as np
import pytest
import torch

import cnnlab as keras
from cnnlab import layers
from cnnlab.backbones.efficientnet_lite import EfficientNetLite
from cnnlab.spec import backbone_params as BP
from cnnlab.spec.checks import SpecError
from cnnlab.spec.summary import summary_dict


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_layer_counts_are_the_networks(variant):
    with torch.device("meta"):
        net = EfficientNetLite(variant, include_top=False)
    assert BP.layer_params(variant, False) == tuple(sum(p.numel() for p in x.parameters()) for x in net.layers())


def fine_tuned(freeze_all_but=4):
    base = keras.applications.EfficientNetLite0(weights=None, include_top=False, input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3))
    x = layers.GlobalAveragePooling2D()(base(inputs))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    base.trainable = True
    for layer in base.layers[:-freeze_all_but]:
        layer.trainable = False
    return model, base


def _running_means(net):
    return [next(m for m in x.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean.clone()
            for x in net.layers()]


def test_book_fine_tuning_recipe_trains_only_the_top_layers():
    model, base = fine_tuned()
    assert [x.name for x in base.layers][:3] == ["stem", "block1a", "block2a"] and base.layers[-1].name == "top"
    assert [x.trainable for x in base.layers][-5:] == [False, True, True, True, True]
    info = summary_dict(model.spec)
    grads = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    expected = sum(x.count_params() for x in base.layers[-4:]) + 1280 * 2 + 2
    assert info["trainable_params"] == grads == expected
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == expected
    before = _running_means(base.module.net)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8), rng.integers(0, 2, 8), epochs=1, verbose=0)
    changed = [not torch.equal(a, b) for a, b in zip(before, _running_means(base.module.net))]
    assert changed == [False] * (len(changed) - 4) + [True] * 4  # frozen layers keep their statistics, as Keras's


def test_flags_survive_a_file_and_the_whole_base_freezes(tmp_path):
    model, base = fine_tuned(2)
    model.save(tmp_path / "m.safetensors")
    back = keras.models.load_model(tmp_path / "m.safetensors")
    again = back.get_layer(base.name)
    assert [x.trainable for x in again.layers] == [x.trainable for x in base.layers]
    assert summary_dict(back.spec)["trainable_params"] == summary_dict(model.spec)["trainable_params"]
    base.trainable = False
    assert not any(x.trainable for x in base.layers)
    assert not any(p.requires_grad for p in base.module.parameters())
    assert summary_dict(model.spec)["trainable_params"] == 1280 * 2 + 2
    with pytest.raises(SpecError, match="frozen_layers must be indices"):
        keras.layers.EfficientNetLite0(weights=None, frozen_layers=(99,))
