"""The Pulumi program: one module per component, pure modules for the values they use."""
