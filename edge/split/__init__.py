"""Split-DNN encoders: device-side heads, server-side tails."""
