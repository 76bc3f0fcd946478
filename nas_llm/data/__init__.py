"""Tasks and their data: GLUE/IMDb/SWAG/language-modeling inputs, labels and their scaling, task metrics."""
