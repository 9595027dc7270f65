"""Drop-in reward sources for RL trainers, all scoring on a rewardserve server over HTTP:
TRL's GRPOTrainer (`integrations.trl`), verl (`integrations.verl`). OpenRLHF needs no code:
the server speaks its remote reward protocol at `/get_reward`."""
