"""Replay a recorded bag through the classifier with ``ros2 bag play`` (a full ROS 2 installation).

    ros2 launch av_snn_ros replay.launch.py bag:=/path/to/bag rate:=1.0
    ros2 topic echo /classification

The classifier is robot.launch.py with the replay parameters (reliable QoS, deep queues: nothing is
dropped when the bag plays faster than real time); playback starts once, when the classifier first
becomes active (a later deactivate/activate through ``ros2 lifecycle set`` pauses the classifier, it
does not restart the bag). The launch ends by itself when playback ends. For bags recorded under other
topic names pass ``image_topic:=`` / ``audio_topic:=``. The classifier runs on bag time (``use_sim_time`` in
config/replay.yaml, ``/clock`` from the player). For scoring against ground truth without a ROS
installation use ``av-snn replay BAG --json OUT`` instead.
"""
from pathlib import Path

SHARE_DIR = Path(__file__).resolve().parent.parent
ROBOT_LAUNCH = SHARE_DIR / 'launch' / 'robot.launch.py'
DEFAULT_PARAMS_FILE = SHARE_DIR / 'config' / 'replay.yaml'


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, RegisterEventHandler
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration
    from launch_ros.event_handlers import OnStateTransition

    from av_snn_ros.ros.launch_support import shutdown_when_exited

    play = ExecuteProcess(
        # --clock: the player publishes bag time on /clock; replay.yaml sets use_sim_time, so the
        # classifier's stamp-to-publish latency is a latency, not the bag's age
        cmd=['ros2', 'bag', 'play', LaunchConfiguration('bag'), '--rate', LaunchConfiguration('rate'), '--clock'],
        output='screen')
    return LaunchDescription([
        DeclareLaunchArgument('bag', description='bag folder to play'),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback rate (1.0 = real time)'),
        DeclareLaunchArgument('params_file', default_value=str(DEFAULT_PARAMS_FILE),
                              description='ROS parameter file of the classifier'),
        # robot.launch.py's other arguments (namespace, image_topic, audio_topic, autostart, ...) pass through
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(ROBOT_LAUNCH)),
            launch_arguments={'params_file': LaunchConfiguration('params_file')}.items()),
        # start playing when the classifier first listens, so the first windows are not lost; once only:
        # an action can be executed once, and a re-activation must not replay the bag
        RegisterEventHandler(OnStateTransition(goal_state='active', entities=[play], handle_once=True)),
        shutdown_when_exited(play, 'bag playback finished'),
    ])
