"""The embedding model behind the embed stage: the encoders and their backends (numpy, ONNX,
torch), the prompt embedder that decides what to embed, and the drift check against fp32."""
