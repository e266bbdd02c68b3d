"""ipwhl: InterPlanetary Wheels, a declared Python wheel repository on IPFS."""

__version__ = "0.1.0"
