"""The core every stage imports and that imports no stage: the vocabulary (`vocab`), errors and the CLI wrapper
(`errors`), atomic file and folder writing (`atomic`), flat dataclass configs (`config`), progress (`progress`),
the quiet TensorFlow import (`tf_import`), the package version (`version`), the commands printed for the user
(`commands`) and the machine's memory (`memory`).

Nothing here imports TensorFlow (numpy is allowed); `tfrecords_builder` imports nothing else from `ivus_tf`.
"""
