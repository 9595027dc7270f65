"""How well a reward model agrees with human preferences: the metrics (`metrics`, numpy only,
shared with training and export), `rewardserve eval`'s pairs and report (`evaluate`), and the
report's HTML page (`html_report`)."""
