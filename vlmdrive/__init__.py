"""vlmdrive: the command line (`vlmdrive ...`) over the agent, sim, scenarios and rl_finetune packages."""

__version__ = "0.1.0"
