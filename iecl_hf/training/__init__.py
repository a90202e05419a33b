"""The stages of pretraining: data, model and optimizers, the loop, its step and callbacks, checkpoints, logs,
trackers, pictures. Its arguments are the command line's (`iecl_hf.cli.pretrain`); optimizers are in
`iecl_hf.optimization`."""
