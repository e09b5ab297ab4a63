import logging

from detr_lightning.data.checkpoint_labels import adopt_labels, labels_state

DATA = [{"id": 3, "name": "disc"}, {"id": 7, "name": "square"}]


def test_the_state_round_trips_and_an_equal_one_warns_of_nothing(caplog):
    state = labels_state([3, 7], DATA)
    assert state == {"label_to_category_id": [3, 7], "categories": DATA}
    with caplog.at_level(logging.WARNING):
        assert adopt_labels(state, [3, 7], DATA, "train.json") == ([3, 7], DATA)
    assert caplog.text == ""


def test_the_checkpoint_mapping_and_names_win_with_a_warning_for_each(caplog):
    saved = [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 9, "name": "star"}]
    with caplog.at_level(logging.WARNING):
        mapping, names = adopt_labels(
            {"label_to_category_id": ["3", "7", "9"], "categories": saved}, [3, 7], DATA, "t.json"
        )
    assert mapping == [3, 7, 9] and names == saved
    assert "(3 classes) replaces the one from the data (2 classes)" in caplog.text
    assert "id 3: 'disc' in t.json, 'circle' in the checkpoint" in caplog.text
    assert "id 7" not in caplog.text  # same name, not listed


def test_an_older_checkpoint_without_categories_keeps_the_data_names(caplog):
    with caplog.at_level(logging.WARNING):
        assert adopt_labels({"label_to_category_id": [3, 7]}, [3, 7], DATA, "t") == ([3, 7], DATA)
    assert caplog.text == ""
