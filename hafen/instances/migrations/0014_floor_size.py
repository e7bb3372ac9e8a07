from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('instances', '0013_pass_seconds'),
    ]

    operations = [
        migrations.AddField(
            model_name='instance',
            name='floor_size',
            field=models.CharField(blank=True, default='', max_length=16),
        ),
    ]
