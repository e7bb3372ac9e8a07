from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('instances', '0014_floor_size'),
    ]

    operations = [
        migrations.AddField(
            model_name='controlplane',
            name='resting',
            field=models.BooleanField(default=False),
        ),
    ]
